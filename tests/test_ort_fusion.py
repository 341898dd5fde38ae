"""ORT-fused fp32 graphs (vlexport.export.fuse): onnxscript's fusions match our dynamo graphs (attention as
MultiHeadAttention with the mask as a bias, SkipLayerNormalization, BiasGelu), keep heavily padded inputs
correct in both the text and the visual part (the trap of ORT's own BERT optimizer), and the runtime serves
the fused graph where the build kept it, the plain graph everywhere else. int8 quantizes the fused graph
when it is the faster source (`--fuse always`: whenever it validated), gated against the plain fp32 graph."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest

import vlexport
from vlexport.export.build import build
from vlexport.export.fuse import fuse_for_ort

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fused_artifact(tmp_path_factory):
    return build("tiny-visualbert-vqa", tmp_path_factory.mktemp("fuse") / "art", fuse="always", int8=True,
                 progress=False)


def _padded_feeds(rng, batch=4, text=16, visual=12, real_text=(2, 3, 16, 5), real_visual=(1, 12, 2, 3)):
    """Mostly padding: texts of 2..16 real tokens in 16, regions 1..12 real of 12, in both parts."""
    from vlexport.families.visual_bert.checkpoints import tiny_config

    cfg = tiny_config()
    t_mask = (np.arange(text) < np.array(real_text)[:, None]).astype(np.int64)
    v_mask = (np.arange(visual) < np.array(real_visual)[:, None]).astype(np.int64)
    return {"input_ids": rng.integers(0, cfg["vocab_size"], (batch, text)), "attention_mask": t_mask,
            "token_type_ids": np.zeros((batch, text), np.int64),
            "visual_embeds": rng.standard_normal((batch, visual, cfg["visual_embedding_dim"])).astype(np.float32),
            "visual_attention_mask": v_mask, "visual_token_type_ids": np.ones((batch, visual), np.int64)}


def test_fusions_match_the_dynamo_graph(fused_artifact, tmp_path):
    facts = fuse_for_ort(fused_artifact / "model.onnx", tmp_path / "f.onnx")
    layers = json.loads((fused_artifact / "config.json").read_text())["num_hidden_layers"]
    assert facts["ops"]["MultiHeadAttention"] == layers
    assert facts["ops"]["BiasGelu"] == layers
    # residual + LayerNorm matched as SkipLayerNormalization, then undone: its CPU kernel is the slower
    assert facts["fusions"]["skip_layer_normalization"] == facts["fusions"]["skip_layer_normalization_undone"] \
        == 2 * layers
    ops = [n.op_type for n in onnx.load(str(tmp_path / "f.onnx")).graph.node]
    assert "Softmax" not in ops  # no attention left unfused
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") >= 2 * layers


def test_cpu_sessions_leave_residual_layernorm_unfused(fused_artifact, tmp_path):
    """ORT's own SkipLayerNormFusion is disabled in CPU sessions (vlexport.runtime.backends.onnxruntime
    .SLOW_CPU_FUSIONS): the graph ORT runs keeps LayerNormalization, and the answers are the reference's."""
    import onnxruntime as ort

    from vlexport.runtime.backends.onnxruntime import SLOW_CPU_FUSIONS, make_session

    assert "SkipLayerNormFusion" in SLOW_CPU_FUSIONS
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "ort-default.onnx")
    ort.InferenceSession(str(fused_artifact / "model.onnx"), so, providers=["CPUExecutionProvider"])
    default = [n.op_type for n in onnx.load(str(tmp_path / "ort-default.onnx")).graph.node]
    assert "SkipLayerNormalization" in default  # what ORT does unless told otherwise
    make_session(fused_artifact / "model.onnx", threads=1, optimized_model=tmp_path / "ort-ours.onnx")
    kept = [n.op_type for n in onnx.load(str(tmp_path / "ort-ours.onnx")).graph.node]
    assert "SkipLayerNormalization" not in kept and "LayerNormalization" in kept


def test_the_build_records_and_the_runtime_serves_the_fused_graph(fused_artifact):
    m = json.loads((fused_artifact / "manifest.json").read_text())
    fused = m["graphs"]["model"]["onnx"]["fp32"]["ort_fused"]
    assert fused["file"] == "model.ort.onnx" and fused["validation"]["passed"] and fused["timing"]["forced"]
    assert "model.ort.onnx" in m["files"]
    model = vlexport.load(fused_artifact)
    assert "(fused graph)" in repr(model)
    assert "(fused graph)" not in repr(vlexport.load(fused_artifact, precision="fp32", fused=False))


def test_heavy_padding_gives_the_reference_answer(fused_artifact):
    """The fused graph vs our PyTorch reference and vs the plain graph, padding in both parts."""
    from vlexport.reference import from_pretrained

    rng = np.random.default_rng(0)
    feeds = _padded_feeds(rng)
    fused = vlexport.load(fused_artifact)(**feeds).logits
    plain = vlexport.load(fused_artifact, fused=False)(**feeds).logits
    ref = from_pretrained("tiny-visualbert-vqa").model.eval()
    with torch.no_grad():
        want = ref(**{k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(fused, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fused, plain, atol=1e-5, rtol=1e-5)
    # padding matters: the same rows without masks give other answers
    loose = vlexport.load(fused_artifact)(**{**feeds, "attention_mask": np.ones_like(feeds["attention_mask"]),
                                           "visual_attention_mask": np.ones_like(feeds["visual_attention_mask"])})
    assert np.abs(loose.logits - fused).max() > 1e-3


def test_int8_is_quantized_from_the_fused_graph_and_keeps_padding_right(fused_artifact):
    from rich.console import Console

    from vlexport.report import manifest_tables

    m = json.loads((fused_artifact / "manifest.json").read_text())
    int8 = m["graphs"]["model"]["onnx"]["int8"]
    assert int8["source_graph"] == {"graph": "fused", "rule": "--fuse always"}
    ops = {n.op_type for n in onnx.load(str(fused_artifact / int8["file"])).graph.node}
    assert "MultiHeadAttention" in ops and ops & {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat"}
    assert m["graphs"]["model"]["validation"]["int8"]["passed"]
    # mostly padding, in both parts: int8 follows fp32, and the masks still matter
    feeds = _padded_feeds(np.random.default_rng(2))
    fp32 = vlexport.load(fused_artifact, precision="fp32", fused=False)(**feeds).logits
    model = vlexport.load(fused_artifact, precision="int8")
    got = model(**feeds).logits
    cos = (fp32 * got).sum(-1) / np.linalg.norm(fp32, axis=-1) / np.linalg.norm(got, axis=-1)
    assert cos.min() >= 0.99 and (fp32.argmax(-1) == got.argmax(-1)).all(), cos
    loose = model(**{**feeds, "attention_mask": np.ones_like(feeds["attention_mask"]),
                     "visual_attention_mask": np.ones_like(feeds["visual_attention_mask"])}).logits
    assert np.abs(loose - got).max() > 1e-3
    console = Console(width=300, record=True, file=io.StringIO())
    for t in manifest_tables(m):
        console.print(t)
    assert "quantized from the ORT-fused fp32 graph" in console.export_text()  # `vlexport inspect` says so


def test_a_tampered_fused_graph_is_refused(fused_artifact, tmp_path):
    import shutil

    from vlexport.errors import ArtifactError

    copy = tmp_path / "art"
    shutil.copytree(fused_artifact, copy)
    (copy / "model.ort.onnx").write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="model.ort.onnx"):
        vlexport.load(copy)(**_padded_feeds(np.random.default_rng(1)))
