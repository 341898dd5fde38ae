"""VisualBERT artifacts end to end: every head from a random `transformers` checkpoint -> ONNX
(+ fp16) artifact -> `vlexport.load(...)` on ONNX Runtime, compared with transformers itself on
shapes the build never traced, padded inputs included; the manifest and the files beside it.

Each head is built once per module (a few seconds each on CPU)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

import numpy as np
import pytest
import torch

import vlexport
from oracle import assert_same_outputs, run_hf, to_torch_outputs
from visual_bert_kit import (EXPECTED_OUTPUTS, HF_CLASSES, QA, R2P, UNSEEN, axes_for, build_small, make_feeds,
                             sizes_for)
from vlexport.export.build import build
from vlexport.families.visual_bert.checkpoints import TINY_ID, TINY_LABELS
from vlexport.families.visual_bert.describe import TASKS

@pytest.fixture(scope="module")
def built(hf_checkpoint, tmp_path_factory):
    """built(arch, **build options) -> (HFCheckpoint, artifact folder); each built once per module."""
    cache = {}

    def get(arch, **kw):
        key = (arch, tuple(sorted(kw.items())))
        if key not in cache:
            hf = hf_checkpoint(arch)
            out = tmp_path_factory.mktemp("artifacts") / arch
            assert build_small(hf.folder, out, arch, **kw) == out
            cache[key] = hf, out
        return cache[key]

    return get


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _graph(out):
    return _manifest(out)["graphs"]["model"]


# ----------------------------------------------------------------------------- fp32 parity

@pytest.mark.parametrize("arch", HF_CLASSES)
def test_fp32_artifact_matches_transformers_on_unseen_shapes(arch, built):
    hf, out = built(arch)
    traced = _graph(out)["trace_sizes"]
    model = vlexport.load(out, backend="onnxruntime")
    assert model.backend.name == "onnxruntime" and model.backend.precision == "fp32"
    rng = np.random.default_rng(sum(map(ord, arch)))
    for sizes, pad in UNSEEN:
        sizes = sizes_for(arch, sizes)
        assert sizes != traced, "a comparison shape equals the traced one: it proves nothing about dynamic axes"
        feeds = make_feeds(arch, hf.config, sizes, rng, pad)
        ours = to_torch_outputs(model(**feeds))
        compared = assert_same_outputs(ours, run_hf(hf.model, feeds), atol=1e-4, what=f"{arch} {sizes} pad={pad}")
        assert compared == EXPECTED_OUTPUTS.get(arch, ["logits"])


def test_region_to_phrase_masked_regions_keep_transformers_values(built):
    """Masked regions hold finfo(float32).min exactly, in the fp32 and in the fp16 graph."""
    hf, out = built(R2P)
    feeds = make_feeds(R2P, hf.config, dict(batch=2, text=6, visual=5, phrases=3), np.random.default_rng(5))
    feeds["visual_attention_mask"][:] = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    theirs = run_hf(hf.model, feeds)["logits"].numpy()
    fmin = np.finfo(np.float32).min
    for precision in ("fp32", "fp16"):
        logits = vlexport.load(out, backend="onnxruntime", precision=precision)(**feeds).logits
        assert (logits[0, :, 3:] == fmin).all(), precision
        assert np.isfinite(logits).all() and (logits[0, :, :3] > -1e4).all() and (logits[1] > -1e4).all()
    np.testing.assert_array_equal(theirs[0, :, 3:], fmin)


def test_alignment_input_matches_transformers(built):
    """--with-alignment adds image_text_alignment (batch, visual, align); equal to HF with it."""
    hf, out = built(QA, with_alignment=True)
    m = _manifest(out)
    spec = {i["name"]: i for i in m["graphs"]["model"]["inputs"]}["image_text_alignment"]
    assert spec["dims"] == ["batch", "visual", "align"] and spec["low"] == -1 and spec["high"] == "text"
    assert "align" in m["axes"]
    model = vlexport.load(out, backend="onnxruntime")
    rng = np.random.default_rng(11)
    for (sizes, pad), align in zip(UNSEEN, (1, 3, 5, 2, 4)):
        sizes = sizes_for(QA, sizes)
        feeds = make_feeds(QA, hf.config, sizes, rng, pad, align=align)
        assert (feeds["image_text_alignment"] >= 0).any()
        theirs = run_hf(hf.model, feeds)
        assert_same_outputs(to_torch_outputs(model(**feeds)), theirs, 1e-4, f"alignment {sizes} align={align}")
        # the input is used: without it the answer scores differ
        plain = {k: v for k, v in feeds.items() if k != "image_text_alignment"}
        assert not torch.allclose(run_hf(hf.model, plain)["logits"], theirs["logits"], atol=1e-3)


# ----------------------------------------------------------------------------- fp16

@pytest.mark.parametrize("arch", HF_CLASSES)
def test_fp16_graph_close_to_fp32(arch, built):
    hf, out = built(arch)
    g = _graph(out)
    rep = g["validation"]["fp16"]
    assert rep["passed"] is True and rep["samples"] == 100 and rep["nonfinite"] == 0
    assert rep["min_cosine"] >= 0.999
    # gated over the whole built range: the largest sizes of every axis were among the cases
    assert rep["largest"] == {k: r.max for k, r in axes_for(arch).items()}
    assert all(o["cosine"] >= o["cosine_min"] for o in rep["outputs"].values())
    class_outputs = [o for o in EXPECTED_OUTPUTS.get(arch, ["logits"]) if o.endswith("logits")]
    assert sorted(rep["top1_agreement"]) == sorted(class_outputs)
    assert all(v >= 0.99 for v in rep["top1_agreement"].values())
    assert g["onnx"]["fp16"]["file"] == "model.fp16.onnx" and g["onnx"]["fp16"]["io_types"] == "float32"

    fp32 = vlexport.load(out, backend="onnxruntime")
    fp16 = vlexport.load(out, backend="onnxruntime", precision="fp16")
    assert fp16.backend.precision == "fp16"
    rng = np.random.default_rng(7)
    agree, rows = {}, {}
    for i in range(12):
        sizes, pad = UNSEEN[i % len(UNSEEN)]
        feeds = make_feeds(arch, hf.config, sizes_for(arch, sizes), rng, pad)
        a, b = fp32(**feeds), fp16(**feeds)
        for name in a:
            x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
            assert b[name].dtype == np.float32 and x.shape == y.shape
            masked = x <= -1e30
            assert (y[masked] <= -1e30).all(), f"{name}: masked entries lost in fp16"
            x, y = x[~masked], y[~masked]
            assert np.isfinite(y).all(), f"{arch} {name}: NaN/inf in the fp16 output"
            cos = (x * y).sum() / (np.linalg.norm(x) * np.linalg.norm(y))
            assert cos >= 0.999, f"{arch} {name}: cosine {cos}"
            if name in class_outputs:
                ra, rb = np.asarray(a[name]), np.asarray(b[name])
                if arch == R2P:  # rows over regions: compare where at least one region is real
                    keep = (ra > -1e30).any(-1)
                    ra, rb = ra[keep], rb[keep]
                ra, rb = ra.reshape(-1, ra.shape[-1]), rb.reshape(-1, rb.shape[-1])
                agree[name] = agree.get(name, 0) + int((ra.argmax(-1) == rb.argmax(-1)).sum())
                rows[name] = rows.get(name, 0) + len(ra)
    for name in class_outputs:
        assert rows[name] >= 10 and agree[name] / rows[name] >= 0.95, (name, agree[name], rows[name])


# ----------------------------------------------------------------------------- manifest and files

def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("arch", [QA, R2P])
def test_manifest_describes_the_build(arch, built):
    hf, out = built(arch)
    m = _manifest(out)
    assert m["format_version"] == vlexport.ARTIFACT_FORMAT_VERSION and m["complete"] is True
    assert m["vlexport_version"] == vlexport.__version__
    assert m["source"]["model"] == str(hf.folder) and m["source"]["weights"] == "checkpoint"
    assert m["architecture"] == arch and m["task"] == TASKS[arch]
    for key in ("vocab_size", "hidden_size", "visual_embedding_dim", "num_hidden_layers", "max_position_embeddings"):
        assert m["config"][key] == hf.config[key], key
    # inputs / outputs with dtypes and axes
    g = m["graphs"]["model"]
    assert list(m["graphs"]) == ["model"] and m["family"] == "visual_bert" and m["pipeline"] == "classify"
    inputs = {i["name"]: i for i in g["inputs"]}
    want = ["input_ids", "attention_mask", "token_type_ids", "visual_embeds", "visual_attention_mask",
            "visual_token_type_ids"] + (["region_to_phrase_position"] if arch == R2P else [])
    assert list(inputs) == want
    assert inputs["input_ids"]["dtype"] == "int64" and inputs["visual_embeds"]["dtype"] == "float32"
    assert inputs["input_ids"]["dims"] == ["batch", "text"] and inputs["input_ids"]["high"] == hf.config["vocab_size"]
    assert inputs["visual_embeds"]["dims"] == ["batch", "visual", hf.config["visual_embedding_dim"]]
    outputs = {o["name"]: o for o in g["outputs"]}
    assert list(outputs) == ["logits"] and outputs["logits"]["dtype"] == "float32"
    assert outputs["logits"]["dims"] == (["batch", len(hf.config["id2label"])] if arch == QA else
                                         ["batch", "phrases", "visual"])
    assert m["axes"] == {k: r.as_list() for k, r in axes_for(arch).items()}
    for name, size in g["trace_sizes"].items():
        lo, _, hi = m["axes"][name]
        assert lo <= size <= hi
    # exporter and tools
    assert isinstance(m["opset"], int) and m["opset"] >= 17
    assert "torch.onnx.export" in m["exporter"]
    for tool in ("torch", "onnx", "onnxruntime", "numpy"):
        assert m["tools"][tool] == importlib.metadata.version(tool)
    # files and their hashes
    assert set(g["onnx"]) == {"fp32", "fp16"}
    for entry in g["onnx"].values():
        assert entry["file"] in m["files"] and all(d in m["files"] for d in entry["data"])
        assert entry["bytes"] == sum((out / rel).stat().st_size for rel in [entry["file"], *entry["data"]])
    # every file in the folder is listed with its hash, config and tokenizer files too
    on_disk = sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert sorted(m["files"]) == on_disk
    for rel, e in m["files"].items():
        assert _sha(out / rel) == e["sha256"] and e["bytes"] == (out / rel).stat().st_size, rel
    assert g["onnx"]["fp32"]["simplifier"]["tool"] in ("onnxsim", "onnxslim", "none")
    # validation figures
    v32 = g["validation"]["fp32"]
    assert v32["passed"] is True and v32["shapes"] >= 6 and len(v32["cases"]) == v32["shapes"]
    assert all(c["sizes"] != g["trace_sizes"] for c in v32["cases"])
    assert any(c["padded"] for c in v32["cases"]) and any(not c["padded"] for c in v32["cases"])
    assert 0 <= v32["worst"]["logits"]["max_abs_err"] <= v32["tolerance"]["atol"] == 1e-4
    assert v32["worst"]["logits"]["cosine_min"] > 0.9999
    assert m["engine_skipped"] or g["engines"]
    # config.json and the tokenizer files beside the graphs
    assert json.loads((out / "config.json").read_text()) == m["config"]
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        assert (out / f).is_file(), f
    assert not [p.name for p in out.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_export_only_has_no_fp16_graph(hf_checkpoint, tmp_path):
    """onnx_only (`vlexport export`): the validated fp32 graph and nothing else."""
    hf = hf_checkpoint("VisualBertForVisualReasoning")
    out = build_small(hf.folder, tmp_path / "a", "VisualBertForVisualReasoning", fp16=True, onnx_only=True)
    g = _graph(out)
    assert set(g["onnx"]) == {"fp32"} and set(g["validation"]) == {"fp32"} and not g["engines"]
    assert not (out / "model.fp16.onnx").exists()
    with pytest.raises(vlexport.errors.ArtifactError, match="no fp16 graph"):
        vlexport.load(out, precision="fp16")


@pytest.fixture(scope="module")
def tiny_artifact(tiny_artifacts):
    return tiny_artifacts[TINY_ID]  # the session's shared build (read-only)


def test_tiny_artifact_processor_round_trip(tiny_artifact):
    m = _manifest(tiny_artifact)
    assert m["source"] == {**m["source"], "model": TINY_ID, "weights": "tiny", "model_dir": None}
    model = vlexport.load(tiny_artifact)
    assert model.backend.name == "onnxruntime"  # no TensorRT engine on this machine
    proc = model.processor
    enc = proc(text=["what is this?", "is it red?"])
    assert enc["input_ids"].dtype == np.int64 and enc["input_ids"].shape[0] == 2
    assert enc["input_ids"][0, 0] == proc.cls_token_id and proc.unk_token_id not in enc["input_ids"]
    assert proc.tokenize("What is this? Is it red?") == ["what", "is", "this", "?", "is", "it", "red", "?"]
    assert proc.decode(enc["input_ids"][0]) == "what is this?"
    visual = np.random.default_rng(0).standard_normal((2, 5, m["config"]["visual_embedding_dim"])).astype(np.float32)
    out = model(**proc(text=["what is this?", "is it red?"], visual_embeds=visual))
    assert out.logits.shape == (2, len(TINY_LABELS)) and np.isfinite(out.logits).all()
    assert model.id2label == dict(enumerate(TINY_LABELS))
    answers = model.top_answers(out.logits, k=3)
    assert len(answers) == 2 and all(label in TINY_LABELS for label, _ in answers[0])
    # same answers from the fp16 graph and from the PyTorch reference rebuilt from the manifest
    half = vlexport.load(tiny_artifact, precision="fp16")(**proc(text=["what is this?", "is it red?"],
                                                                  visual_embeds=visual))
    np.testing.assert_array_equal(half.logits.argmax(-1), out.logits.argmax(-1))
    ref = vlexport.load(tiny_artifact, backend="torch")(**proc(text=["what is this?", "is it red?"],
                                                                visual_embeds=visual))
    np.testing.assert_allclose(ref.logits, out.logits, atol=1e-5)
