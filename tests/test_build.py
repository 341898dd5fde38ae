"""`vlexport build` for every registered family's built-in tiny models (the registry drives the
parameters: a new family's tiny models are picked up without editing this file): the artifact
layout (format 2), fp32 parity with the PyTorch reference on shapes the build never traced,
reduced precisions gated over the whole built range, and reproducible builds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import vlexport
from vlexport import families
from vlexport.export.build import build
from vlexport.export.validate import shape_grid

TINY_IDS = sorted(i for f in families.all_families() for i in f.tiny)


@pytest.fixture(scope="module")
def built(tiny_artifacts):
    """model id -> its artifact built with --fp16 --int8 (the session's shared build: conftest.py)."""
    return tiny_artifacts.__getitem__


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("model_id", TINY_IDS)
def test_artifact_layout(model_id, built):
    out = built(model_id)
    m = _manifest(out)
    fam = families.get(m["family"])
    assert m["format_version"] == vlexport.ARTIFACT_FORMAT_VERSION == 2 and m["complete"] is True
    assert m["architecture"] in fam.architectures and m["task"] == fam.architectures[m["architecture"]]
    assert m["source"] == {**m["source"], "model": model_id, "weights": "tiny", "model_dir": None}
    spec = families.describe_artifact(vlexport.artifact.Artifact(out))
    assert list(m["graphs"]) == [g.name for g in spec.graphs] and m["pipeline"] == spec.pipeline
    # every file in the folder is listed with its hash and size; nothing else is
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(m["files"]) == on_disk and "config.json" in m["files"]
    for rel, e in m["files"].items():
        assert _sha(out / rel) == e["sha256"] and (out / rel).stat().st_size == e["bytes"], rel
    for name, g in m["graphs"].items():
        int8 = set() if spec.graph(name).int8_refused else {"int8"}  # a graph may refuse int8, saying why
        assert set(g["onnx"]) == {"fp32", "fp16"} | int8
        assert all(v["passed"] for v in g["validation"].values())
        assert set(g["validation"]) >= {"fp32", "fp16"} | int8
    assert json.loads((out / "config.json").read_text()) == m["config"]
    assert not [p.name for p in out.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("model_id", TINY_IDS)
def test_fp32_graphs_match_the_reference_on_unseen_shapes(model_id, built):
    """ORT fp32 against the PyTorch reference rebuilt from the manifest, on the shape grid (none of
    its shapes is the traced one; the extremes of every axis included), padded and unpadded."""
    out = built(model_id)
    art = vlexport.artifact.Artifact(out)
    spec = families.describe_artifact(art)
    ort = vlexport.load(out, backend="onnxruntime")
    ref = vlexport.load(out, backend="torch")
    rng = np.random.default_rng(3)
    for graph in spec.graphs:
        axes = spec.axes_for(graph)
        traced = art.graph_entry(graph.name)["trace_sizes"]
        cases = shape_grid(axes, traced)
        assert len(cases) >= (6 if len(axes) > 1 else 5) and all(s != traced for s, _ in cases)
        assert any(s == {k: r.max for k, r in axes.items()} or all(s[k] == r.max for k, r in axes.items() if k != "batch")
                   for s, _ in cases)
        for sizes, pad in cases:
            feeds = graph.make_inputs(sizes, rng, pad=pad)
            want, got = ref.run_graph(graph.name, feeds), ort.run_graph(graph.name, feeds)
            for o in graph.outputs:
                a, b = np.asarray(want[o.name], np.float64), np.asarray(got[o.name], np.float64)
                keep = a > -1e30
                assert np.abs(a - b)[keep].max(initial=0) <= 1e-4 + 1e-4 * np.abs(a)[keep].max(initial=0), (o.name, sizes)


@pytest.mark.parametrize("model_id", TINY_IDS)
def test_reduced_precisions_were_gated_over_the_whole_range(model_id, built):
    m = _manifest(built(model_id))
    for g in m["graphs"].values():
        used = {t for io in g["inputs"] + g["outputs"] for d in io["dims"] if isinstance(d, str) for t in d.split("+")}
        largest = {k: v[2] for k, v in m["axes"].items() if k in used}
        for prec in [p for p in ("fp16", "int8") if p in g["onnx"]]:  # (a graph may refuse int8: test_artifact_layout)
            rep = g["validation"][prec]
            assert rep["largest"] == largest, prec  # the max of every axis was among the cases
            assert rep["min_cosine"] == min(o["cosine_min"] for o in rep["outputs"].values())
            assert rep["min_cosine"] >= rep["thresholds"]["min_cosine"]
            for o in g["outputs"]:
                assert (o["name"] in rep["top1_agreement"]) == bool(o.get("classes")), (prec, o["name"])


# the quickest tiny model to build (a few seconds): the two tests below build their own
QUICK_ID = "tiny-visualbert-vqa" if "tiny-visualbert-vqa" in TINY_IDS else TINY_IDS[0]


@pytest.mark.parametrize("model_id", [QUICK_ID])
def test_the_same_build_gives_byte_identical_graphs(model_id, built, tmp_path):
    """Reproducible builds: the same build twice (here the session's `vlexport build --fp16 --int8
    --threads 1` and the same through the Python API, in another process) writes the same graph bytes
    (the simplified graph is kept only by a robust margin, so the choice does not flip from run to run)."""
    a = built(model_id)
    b = build(model_id, tmp_path / "b", fp16=True, int8=True, progress=False, threads=1)
    ma, mb = _manifest(a), _manifest(b)
    graphs = [rel for rel in ma["files"] if rel.endswith((".onnx", ".data"))]
    assert graphs and sorted(graphs) == sorted(rel for rel in mb["files"] if rel.endswith((".onnx", ".data")))
    for rel in graphs:
        assert ma["files"][rel]["sha256"] == mb["files"][rel]["sha256"], rel
    for g in ma["graphs"]:
        assert ma["graphs"][g]["onnx"]["fp32"]["simplifier"]["kept"] == mb["graphs"][g]["onnx"]["fp32"]["simplifier"]["kept"]


@pytest.mark.parametrize("model_id", [QUICK_ID])
def test_export_only_writes_fp32_graphs(model_id, tmp_path):
    out = build(model_id, tmp_path / "x", fp16=True, onnx_only=True, progress=False)
    m = _manifest(out)
    for g in m["graphs"].values():
        assert set(g["onnx"]) == {"fp32"} and set(g["validation"]) == {"fp32"} and not g["engines"]
    with pytest.raises(vlexport.errors.ArtifactError, match="no fp16 graph"):
        vlexport.load(out, precision="fp16")


@pytest.mark.parametrize("model_id", TINY_IDS)
def test_tensorrt_profiles_cover_every_graph(model_id, built):
    """The optimization profiles an engine of each graph would get (computed without TensorRT): every
    input of the graph, fixed dims exact, dynamic dims within the artifact's axis ranges, opt inside."""
    from vlexport.specs import AxisRange
    from vlexport.tensorrt.profiles import profiles_from_manifest

    m = _manifest(built(model_id))
    axes = {k: AxisRange.from_list(v) for k, v in m["axes"].items()}
    for graph, entry in m["graphs"].items():
        profiles = profiles_from_manifest(m, graph)
        assert profiles, graph
        for p in profiles:
            assert list(p) == [i["name"] for i in entry["inputs"]]
            for spec in entry["inputs"]:
                lo, opt, hi = p[spec["name"]]
                for d, a, o, b in zip(spec["dims"], lo, opt, hi):
                    assert a <= o <= b, (graph, spec["name"])
                    if isinstance(d, int):
                        assert a == o == b == d
                    elif "+" not in d:
                        assert axes[d].min <= a and b <= axes[d].max
