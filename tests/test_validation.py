"""Validation that cannot pass a wrong graph: reduced precisions are gated over the whole built range
of every axis with the worst per-row cosine and top-1 on class outputs; `vlexport validate` fails
when a check it was asked for cannot run or raises; nothing here changes process-global settings;
backend="auto" falls back to ONNX Runtime (saying why) when an engine cannot run here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import vlexport
import vlexport.artifact
from vlexport import families
from vlexport.errors import ValidationError
from vlexport.export.validate import precision_cases, shape_grid, validate_precision
from vlexport.fsutil import sha256

def _one_graph_classifier(model_id) -> bool:
    fam, cfg, _ = families.embedded(model_id)
    spec = fam.describe((cfg.get("architectures") or [next(iter(fam.architectures))])[0], fam.config_from_dict(cfg))
    return len(spec.graphs) == 1 and any(o.classes for o in spec.graphs[0].outputs)


# these tests doctor one graph with class scores and a text-like axis: the first such tiny model
TINY = next(i for i in sorted(i for f in families.all_families() for i in f.tiny) if _one_graph_classifier(i))


@pytest.fixture(scope="module")
def art(tiny_artifacts):
    out = tiny_artifacts[TINY]  # the session's shared build (read-only)
    a = vlexport.artifact.Artifact(out)
    spec = families.describe_artifact(a)
    graph = spec.graphs[0]
    fp32 = vlexport.load(out, backend="onnxruntime")
    return out, graph, spec.axes_for(graph), (lambda feeds: fp32.run_graph(graph.name, feeds))


def _wrong_when(fp32, pred, damage):
    """A candidate that equals fp32 except where pred(feeds) holds: there `damage` changes its outputs."""
    def run(feeds):
        out = {k: np.array(v) for k, v in fp32(feeds).items()}
        if pred(feeds):
            for k in out:
                out[k] = damage(out[k])
        return out
    return run


def _long(graph, axes):
    """The length axis the graph's first input uses, and a size past which a graph is 'wrong'."""
    name = next(d for d in graph.inputs[0].dims if isinstance(d, str) and d != "batch")
    r = axes[name]
    return name, min(2 * r.opt, r.max - 1)


def test_the_cases_cover_every_axis_up_to_its_max(art):
    _, graph, axes, _ = art
    cases = precision_cases(axes, 100, seen={})
    for k, r in axes.items():
        assert max(s[k] for s, _ in cases) == r.max and min(s[k] for s, _ in cases) == r.min, k
    # random draws reach past twice the opt size (where the old validation stopped measuring accuracy)
    name, limit = _long(graph, axes)
    draws = precision_cases(axes, 300, seen={})[:30]
    assert sum(s[name] > limit for s, _ in draws) >= 2


def test_a_graph_wrong_only_at_long_inputs_fails(art):
    _, graph, axes, fp32 = art
    name, limit = _long(graph, axes)
    dim = next(i for i, d in enumerate(graph.inputs[0].dims) if d == name)
    wrong = _wrong_when(fp32, lambda f: f[graph.inputs[0].name].shape[dim] > limit,
                        lambda x: x[..., ::-1].copy())  # a permutation: finite, same scale, wrong
    with pytest.raises(ValidationError, match="worst per-row cosine"):
        validate_precision(fp32, wrong, graph, axes, "wrong-at-long", n_samples=40)
    assert validate_precision(fp32, fp32, graph, axes, "itself", n_samples=40)["passed"]


def test_one_bad_row_in_a_batch_fails_though_the_batch_cosine_is_high(art):
    _, graph, axes, fp32 = art

    def one_bad_row(x):
        if x.ndim >= 2 and x.shape[0] >= 8:
            x = x.copy()
            x[0] = -x[0]  # one sample of many: the flattened cosine stays ~1 - 2/B
        return x

    wrong = _wrong_when(fp32, lambda f: True, one_bad_row)
    with pytest.raises(ValidationError, match=r"worst per-row cosine of '\w+' -?[01]\.\d+"):
        validate_precision(fp32, wrong, graph, axes, "one-bad-row", n_samples=40)


def test_top1_is_gated_on_class_outputs(art):
    _, graph, axes, fp32 = art
    classes = [o.name for o in graph.outputs if o.classes]
    assert classes, "the tiny model has class scores"

    def swap_top2(x):  # the two best classes trade places: cosine stays high, the answer changes
        x = x.copy()
        order = np.argsort(-x, axis=-1)
        i1, i2 = order[..., :1], order[..., 1:2]
        v1, v2 = np.take_along_axis(x, i1, -1), np.take_along_axis(x, i2, -1)
        np.put_along_axis(x, i1, v2, -1)
        np.put_along_axis(x, i2, v1, -1)
        return x

    wrong = _wrong_when(fp32, lambda f: True, swap_top2)
    with pytest.raises(ValidationError, match="top-1 agreement"):
        validate_precision(fp32, wrong, graph, axes, "swapped", n_samples=20, min_cosine=0.0)


def test_nan_anywhere_in_range_fails(art):
    _, graph, axes, fp32 = art
    b_max = axes["batch"].max
    wrong = _wrong_when(fp32, lambda f: next(iter(f.values())).shape[0] == b_max, lambda x: x * np.nan)
    with pytest.raises(ValidationError, match="NaN/inf"):
        validate_precision(fp32, wrong, graph, axes, "nan-at-max-batch", n_samples=20)


def test_tensorrt_profile_shapes_are_among_the_cases(art):
    _, graph, axes, _ = art
    extra = [{"batch": 1, **{k: r.max for k, r in axes.items() if k != "batch"}}]
    assert extra[0] in [s for s, _ in precision_cases(axes, 10, {}, extra)]
    assert len(shape_grid(axes)) >= 6


# ----------------------------------------------------------------------------- vlexport validate

def _validate(path, *args):
    return subprocess.run([sys.executable, "-m", "vlexport", "validate", str(path), *args],
                          capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", **__import__("os").environ})


def test_validate_fails_when_an_asked_check_cannot_run(art, tiny_artifacts):
    out = art[0]
    proc = _validate(out, "--backend", "tensorrt", "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "could not run" in proc.stdout
    # an artifact without int8 graphs (every graph refused int8, saying why at build time)
    no_int8 = [f for f in tiny_artifacts.values()
               if not any("int8" in g["onnx"] for g in json.loads((f / "manifest.json").read_text())["graphs"].values())]
    if no_int8:
        proc = _validate(no_int8[0], "--backend", "onnxruntime:int8", "--quiet")
        assert proc.returncode == 1 and "could not run" in proc.stdout, proc.stdout
    proc = _validate(out, "--quiet")  # by default a check that cannot run here is skipped, with the reason
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pass" in proc.stdout and "FAIL" not in proc.stdout


def test_an_exception_inside_a_comparison_is_a_failure(art, tmp_path):
    """A fp16 graph that loads but cannot run (its manifest and hash say it is fine) fails the check."""
    import onnx

    out = tmp_path / "broken"
    shutil.copytree(art[0], out)
    g = onnx.load(str(out / "model.fp16.onnx"))
    g.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64  # the graph says int64, computes float
    onnx.save(g, str(out / "model.fp16.onnx"))
    m = json.loads((out / "manifest.json").read_text())
    m["files"]["model.fp16.onnx"] = {"sha256": sha256(out / "model.fp16.onnx"),
                                     "bytes": (out / "model.fp16.onnx").stat().st_size}
    (out / "manifest.json").write_text(json.dumps(m))
    proc = _validate(out, "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "FAIL" in proc.stdout


# ----------------------------------------------------------------------------- process-global settings

def test_library_imports_and_validate_change_no_global_settings(art):
    code = f"""
import os, sys
before = os.environ.get("OMP_WAIT_POLICY")
import vlexport, vlexport.bench, vlexport.bench.harness, vlexport.export.build, vlexport.cli
assert os.environ.get("OMP_WAIT_POLICY") == before, "an import set OMP_WAIT_POLICY"
import torch
torch.set_num_threads(1)
from vlexport.export.validate_artifact import validate_artifact
assert validate_artifact({str(art[0])!r}, progress=False, table=False)["passed"]
assert torch.get_num_threads() == 1, torch.get_num_threads()
assert os.environ.get("OMP_WAIT_POLICY") == before
print("ok")
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ----------------------------------------------------------------------------- auto backend

def test_auto_falls_back_to_onnxruntime_when_the_engine_cannot_run_here(art, tmp_path):
    """An artifact carrying an fp16 engine (here: bytes no TensorRT would accept) on a machine where it
    cannot run: backend="auto" uses ONNX Runtime and says why, instead of raising."""
    out = tmp_path / "with-engine"
    shutil.copytree(art[0], out)
    (out / "model.fp16.plan").write_bytes(b"not an engine")
    m = json.loads((out / "manifest.json").read_text())
    m["graphs"]["model"]["engines"]["fp16"] = {"file": "model.fp16.plan", "tensorrt_version": "10.12.0",
                                               "gpu": "NVIDIA H100", "compute_capability": "9.0", "profiles": [],
                                               "options": {}}
    m["files"]["model.fp16.plan"] = {"sha256": sha256(out / "model.fp16.plan"), "bytes": 13}
    (out / "manifest.json").write_text(json.dumps(m))
    model = vlexport.load(out, precision="fp16")
    assert model.backend.name == "onnxruntime"
    assert "using ONNX Runtime" in model.chosen_because and "TensorRT" in model.chosen_because
    with pytest.raises(vlexport.errors.VlexportError):
        vlexport.load(out, backend="tensorrt", precision="fp16")  # asked for by name: a clear error


def test_memoized_outputs_runs_each_distinct_input_once():
    """A search validates every candidate on the same inputs: the fp32 outputs on them are computed once
    (vlexport.export.validate.memoized_outputs), keyed by the feeds' bytes, names, dtypes and shapes."""
    from vlexport.export.validate import memoized_outputs

    calls = []

    def run(feeds):
        calls.append(1)
        return {"y": feeds["x"].astype(np.float32).sum(-1, keepdims=True) * 2}

    memo = memoized_outputs(run)
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    first = memo({"x": a})
    assert memo({"x": a.copy()}) is first and len(calls) == 1  # the same bytes: not run again
    memo({"x": a.reshape(4, 3)})  # same bytes, another shape
    memo({"x": a.astype(np.int32)})  # another dtype
    memo({"x": a[:, ::2]})  # a strided view is hashed by its values
    b = a.copy()
    b[2, 3] += 1
    memo({"x": b})
    assert len(calls) == 5
    np.testing.assert_array_equal(memo({"x": a[:, ::2].copy()})["y"], run({"x": a[:, ::2]})["y"])
    assert len(calls) == 6  # the copy was memoized; the direct call above ran
    small = memoized_outputs(run, max_bytes=8)  # outputs past the budget are not kept: run every time
    small({"x": a}), small({"x": a})
    assert len(calls) == 8
