"""int8 output heads (GraphSpec.int8_quantize_heads): a head tied to the token embedding (`MatMul(x,
Transpose(W))` beside `Gather(W, ids)`) gets its own transposed weight so ONNX Runtime's quantizer can
quantize it, the embedding keeps its fp32 table; the gated search tries the heads in int8 first and keeps
them fp32 when that misses the gate; the captioner's decoder (its 50k-vocabulary projection) is built so."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlexport.export.quantize import quantize_int8
from vlexport.runtime.backends.onnxruntime import make_session
from vlexport.specs import AxisRange, GraphSpec, InputSpec, OutputSpec

V, H = 200, 32


def _tied_lm(path, w):
    """ids (R,) -> Gather(W) -> Relu -> MatMul(., Transpose(W)) -> logits (R, V): an embedding tied to its head."""
    nodes = [helper.make_node("Gather", ["W", "ids"], ["e"], name="embed"),
             helper.make_node("Relu", ["e"], ["h"], name="relu"),
             helper.make_node("Transpose", ["W"], ["Wt"], name="transpose", perm=[1, 0]),
             helper.make_node("MatMul", ["h", "Wt"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "lm", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["r"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["r", V])],
                              [numpy_helper.from_array(w.astype(np.float32), "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _run(path, feeds):
    sess = make_session(path, 1)
    return sess.run(None, feeds)[0]


def test_a_tied_head_is_untied_and_quantized(tmp_path):
    w = np.random.default_rng(0).standard_normal((V, H)).astype(np.float32)
    src = _tied_lm(tmp_path / "lm.onnx", w)
    ids = {"ids": np.arange(0, V, 7, dtype=np.int64)}
    ref = _run(src, ids)

    kept = quantize_int8(src, tmp_path / "kept.onnx")  # the default: output heads stay fp32
    assert kept["nodes_quantized"] == 0 and kept["untied_heads"] == [] and kept["kept_fp32"] == ["head"]

    facts = quantize_int8(src, tmp_path / "heads.onnx", keep_output_layers=False)
    assert facts["untied_heads"] == ["head"] and facts["nodes_quantized"] == 1
    q = onnx.load(str(tmp_path / "heads.onnx"))
    ops = [n.op_type for n in q.graph.node]
    assert "Transpose" not in ops and "MatMul" not in ops  # the head runs as an int8 kernel
    gather = next(n for n in q.graph.node if n.op_type == "Gather")
    table = next(t for t in q.graph.initializer if t.name == gather.input[0])
    assert np.array_equal(numpy_helper.to_array(table), w)  # the embedding keeps its exact fp32 rows
    out = _run(tmp_path / "heads.onnx", ids)
    cos = (out * ref).sum(-1) / np.linalg.norm(out, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() > 0.999 and not np.array_equal(out, ref)


def _outlier_head(path, k=16, n=24):
    """x (R, k) -> MatMul(x, Transpose(W)) -> logits: channel 0 of x is huge and W ignores it, so one int8 scale
    per call for x rounds the channels that matter to zero when the head is quantized."""
    w = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32)
    w[:, 0] = 0.0
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0], name="transpose"),
             helper.make_node("MatMul", ["x", "Wt"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n])],
                              [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    def make_inputs(sizes, rng, pad=True):
        x = rng.uniform(-1, 1, (sizes["batch"], k)).astype(np.float32)
        x[:, 0] = 5000.0
        return {"x": x}

    spec = GraphSpec("g", [InputSpec("x", ("batch", k), dtype="float32")], [OutputSpec("logits", ("batch", n))],
                     make_inputs=make_inputs, int8_quantize_heads=True)
    return path, spec


@pytest.mark.parametrize("quantize_heads", [True, False])
def test_the_search_keeps_heads_fp32_when_int8_heads_miss_the_gate(tmp_path, quantize_heads):
    from vlexport.export.build_common import ort_runner
    from vlexport.export.int8_search import quantize_gated
    from vlexport.export.validate import int8_gate

    src, spec = _outlier_head(tmp_path / "g.onnx")
    axes = {"batch": AxisRange(1, 2, 4)}
    facts, rep = quantize_gated(src, tmp_path / "g.int8.onnx", spec, axes, ort_runner(src, 1), int8_gate("random"),
                                runner=lambda p: ort_runner(p, 1), samples=8, seen={"batch": 2}, threads=1,
                                quantize_heads=quantize_heads, note=lambda m: None)
    trials = facts["search"]["trials"]
    assert [t["base"] for t in trials] == (["plain_heads", "plain"] if quantize_heads else ["plain"])
    if quantize_heads:
        assert not trials[0]["passed"] and "cosine" in trials[0]["failed"]  # the int8 head lost the signal
    assert facts["search"]["base"] == "plain" and trials[-1]["passed"] and facts["kept_fp32"] == ["head"]
    assert rep["min_cosine"] > 0.9999  # the head stayed fp32: nothing else to quantize


def test_the_captioner_decoder_gets_an_int8_vocabulary_projection(tmp_path):
    """tiny-captioner --int8: the decoder's lm_head (tied to wte) is int8 and passed the gate; the encoder,
    whose outputs feed the decoder and are no classifier, is as before; inspect says so."""
    from vlexport.cli import main
    from vlexport.export.build import build

    out = build("tiny-captioner", tmp_path / "art", int8=True, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    dec = m["graphs"]["decoder"]["onnx"]["int8"]
    assert dec["search"]["base"] == "plain_heads" and dec["untied_heads"] and dec["kept_fp32"] == []
    q = onnx.load(str(out / "decoder.int8.onnx"), load_external_data=False)
    consts = {t.name for t in q.graph.initializer}
    assert not [n.name for n in q.graph.node if n.op_type == "MatMul" and n.input[1] in consts]
    assert m["graphs"]["encoder"]["onnx"]["int8"]["search"]["base"] == "plain"
    import vlexport

    px = np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
    a = vlexport.load(out, precision="int8").generate(pixel_values=px, max_new_tokens=8)
    b = vlexport.load(out).generate(pixel_values=px, max_new_tokens=8)
    assert a.shape == b.shape and (a == b).mean() > 0.8
    assert main(["inspect", str(out)]) == 0
