"""int8 graphs and the CPU they run on (vlexport.export.quantize.int8_cpu_mismatch).

An int8 graph with full 8-bit weights (built on a CPU with VNNI) saturates on an x86 CPU without VNNI: ONNX
Runtime's u8 x s8 kernel there sums pairs of products in 16 bits. Measured on an AVX2-only AMD EPYC with the
trained MiniLM VisualBERT's per-token int8 graph: worst-row cosine 0.990 with 7-bit weights, 0.928 with 8-bit
ones, so the build's gate does not hold there. The runtime refuses such a graph on such a CPU, and
`--int8-portable` builds weights that run right everywhere (7-bit signed, or unsigned 8-bit for the per-token
graphs, whose u8 x u8 kernel never saturates). The refusal itself is seen for real on a CPU without VNNI; on
one with VNNI the same test checks that the graph loads and runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vlexport
from vlexport.errors import ArtifactError
from vlexport.export.quantize import int8_cpu_mismatch, quantize_int8, saturating_cpu
from vlexport.fsutil import sha256

AVX2 = "processor : 0\nflags : fpu sse sse2 ssse3 avx avx2 fma\n"
VNNI = AVX2.rstrip("\n") + " avx512f avx512_vnni\n"
AVX_VNNI = AVX2.rstrip("\n") + " avx_vnni\n"
ID = "tiny-visualbert-vqa"


def test_saturating_cpu_is_x86_without_vnni():
    assert saturating_cpu(AVX2, "x86_64") and saturating_cpu(AVX2, "AMD64")
    assert not saturating_cpu(VNNI, "x86_64") and not saturating_cpu(AVX_VNNI, "x86_64")
    assert not saturating_cpu(AVX2.replace("avx2", "amx_int8"), "x86_64")
    assert not saturating_cpu(AVX2, "aarch64")  # ARM's int8 dot products do not saturate


def test_an_8bit_graph_is_refused_only_where_it_saturates():
    why = int8_cpu_mismatch({"reduce_range": False}, AVX2, "x86_64")
    assert why and "--int8-portable" in why and "saturates" in why and "precision='fp32'" in why
    assert int8_cpu_mismatch({"reduce_range": True}, AVX2, "x86_64") is None  # 7-bit weights: every CPU
    assert int8_cpu_mismatch({"reduce_range": False}, VNNI, "x86_64") is None
    assert int8_cpu_mismatch({"reduce_range": False}, AVX2, "aarch64") is None
    assert int8_cpu_mismatch({}, AVX2, "x86_64") is None  # an artifact from before the record: as it was
    # unsigned 8-bit weights (per-token graphs where signed ones would saturate): u8 x u8 never saturates
    assert int8_cpu_mismatch({"reduce_range": False, "weight_type": "QUInt8"}, AVX2, "x86_64") is None


def _u8_per_channel(w):
    """(K, N) weights as ONNX Runtime's quantizer writes QUInt8 per output column, dequantized."""
    lo, hi = np.minimum(w.min(0), 0), np.maximum(w.max(0), 0)
    scale = (hi - lo) / 255.0
    zp = np.clip(np.round(-lo / scale), 0, 255)
    return (np.clip(np.round(w / scale) + zp, 0, 255) - zp) * scale


def test_unsigned_weights_do_not_saturate_on_any_cpu(tmp_path):
    """Full-range activations and weights with an outlier channel, where signed 8-bit weights saturate on an x86
    CPU without VNNI: with unsigned weights ORT's result is the exact product of the quantized values here too."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from vlexport.export.int8_search import _dynamic_uint8
    from vlexport.runtime.backends.onnxruntime import make_session

    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 48)).astype(np.float32) * 0.1
    x = rng.standard_normal((32, 64)).astype(np.float32)
    x[:, 5] *= 30.0
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                               helper.make_node("Relu", ["h"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["r", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "f.onnx"))
    facts = quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", unsigned_weights=True)
    assert facts["weight_type"] == "QUInt8" and facts["reduce_range"] is False
    got = make_session(tmp_path / "q.onnx").run(["y"], {"x": x})[0]
    sim = np.maximum(_dynamic_uint8(x, False) @ _u8_per_channel(w), 0)
    exact = np.maximum(x @ w, 0)
    assert np.abs(got - exact).max() > 1e-2  # quantized: visibly not fp32
    np.testing.assert_allclose(got, sim, atol=1e-4 * np.abs(exact).max())


def _with_int8(src: Path, dst: Path, reduce_range: bool) -> Path:
    """A copy of the artifact `src` whose int8 graph is quantized again with `reduce_range`, its manifest
    saying so and its hashes updated (as a build on another CPU would have written it)."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    entry = m["graphs"]["model"]["onnx"]["int8"]
    quantize_int8(dst / m["graphs"]["model"]["onnx"]["fp32"]["file"], dst / entry["file"], reduce_range=reduce_range)
    entry["reduce_range"] = reduce_range
    m["files"][entry["file"]] = {"sha256": sha256(dst / entry["file"]), "bytes": (dst / entry["file"]).stat().st_size}
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("reduce_range", [False, True], ids=["8-bit", "7-bit"])
def test_loading_int8_follows_the_cpu(tiny_artifacts, tmp_path, reduce_range):
    if ID not in tiny_artifacts:
        pytest.skip(f"{ID} is not a registered tiny model")
    art = _with_int8(tiny_artifacts[ID], tmp_path / "art", reduce_range)
    fp32 = vlexport.load(art, backend="onnxruntime")
    dim = fp32.artifact.manifest["config"]["visual_embedding_dim"]
    rng = np.random.default_rng(0)
    enc = fp32.processor(["what is on the table?", "a dog"], visual_embeds=list(rng.random((2, 5, dim), np.float32)))
    if not reduce_range and saturating_cpu():
        with pytest.raises(ArtifactError, match=r"cannot run in int8 on this CPU.*--int8-portable"):
            vlexport.load(art, backend="onnxruntime", precision="int8")
        return
    int8 = vlexport.load(art, backend="onnxruntime", precision="int8")  # VNNI, ARM, or 7-bit weights
    want, got = fp32(**enc).logits, int8(**enc).logits
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert np.isfinite(got).all() and cos.min() > 0.95, cos


def test_int8_portable_builds_7bit_weights_and_says_so(tmp_path):
    out = tmp_path / "art"
    subprocess.run([sys.executable, "-m", "vlexport", "build", "--model", ID, "--int8-portable", "--out", str(out),
                    "--threads", "1", "--quiet"], check=True, capture_output=True, text=True)
    m = json.loads((out / "manifest.json").read_text())
    entry = m["graphs"]["model"]["onnx"]["int8"]  # --int8-portable implies --int8
    assert entry["reduce_range"] or entry["weight_type"] == "QUInt8"
    assert int8_cpu_mismatch(entry, AVX2, "x86_64") is None  # even where signed 8-bit weights saturate
    shown = subprocess.run([sys.executable, "-m", "vlexport", "inspect", str(out)], check=True, capture_output=True,
                           text=True, env={**os.environ, "COLUMNS": "250"}).stdout
    assert "any CPU" in shown
    vlexport.load(out, backend="onnxruntime", precision="int8")  # on every CPU
