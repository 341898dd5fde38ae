"""The benchmark harness: statistics by hand, sweeps, report files, a tiny end-to-end run, int8.
No timing thresholds anywhere: timings are recorded, never asserted."""

import json
import math

import numpy as np
import pytest

from vlexport import families, metrics
from vlexport.artifact import Artifact
from vlexport.bench import timing as stats
from vlexport.bench.harness import BenchOptions, evaluate_targets, expand_sweep

TARGETS = {"ort_fp32_speedup": 1.5, "ort_int8_speedup": 2.5, "ort_fp32_pct_peak_b32": 80.0, "wrapper_overhead_pct": 3.0}
TINY_IDS = sorted(i for f in families.all_families() for i in f.tiny)


def _tiny_graphs(model_id: str) -> list:
    """The graphs a tiny model's artifact will have: [None] for one graph (the harness's default),
    else every graph's name (an artifact with several is timed one chosen graph per run)."""
    fam, cfg, _ = families.embedded(model_id)
    arch = (cfg.get("architectures") or list(fam.architectures))[0]
    names = [g.name for g in fam.describe(arch, fam.config_from_dict(cfg)).graphs]
    return [None] if len(names) == 1 else names


def _opt(model_id: str, axis: str) -> int:
    fam, cfg, _ = families.embedded(model_id)
    arch = (cfg.get("architectures") or list(fam.architectures))[0]
    return fam.describe(arch, fam.config_from_dict(cfg)).axes[axis].opt


def _example_axis(model_id: str, graph) -> str:
    """The axis that counts examples in a graph: "batch", or "images" for a vision graph fed images."""
    fam, cfg, _ = families.embedded(model_id)
    arch = (cfg.get("architectures") or list(fam.architectures))[0]
    spec = fam.describe(arch, fam.config_from_dict(cfg))
    g = spec.graphs[0] if graph is None else spec.graph(graph)
    return "batch" if "batch" in g.axes_used() else g.axes_used()[0]


TINY_GRAPHS = [(i, g) for i in TINY_IDS for g in _tiny_graphs(i)]


def test_percentiles_match_hand_values():
    xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    p = stats.percentiles(xs)
    assert p["p50"] == pytest.approx(5.5)
    assert p["p90"] == pytest.approx(9.1)  # 9 + 0.1 * (10 - 9), linear interpolation
    assert p["p99"] == pytest.approx(9.91)
    s = stats.latency_summary([0.001, 0.003])  # seconds -> ms
    assert s["p50_ms"] == pytest.approx(2.0) and s["n"] == 2 and s["min_ms"] == pytest.approx(1.0)
    assert math.isnan(stats.percentiles([])["p50"])


def test_throughput_and_gflops():
    assert stats.throughput(32, 0.5) == 64
    assert stats.gflops_per_s(2e9, 0.5) == pytest.approx(4.0)


def test_expand_sweep_one_axis_at_a_time_and_grid():
    base = {"batch": 1, "text": 20, "visual": 36}
    pts = expand_sweep(base, {"batch": [1, 2, 4], "text": [8, 20]})
    assert pts == [base, {**base, "batch": 2}, {**base, "batch": 4}, {**base, "text": 8}]
    grid = expand_sweep(base, {"batch": [1, 2], "visual": [10, 36]}, grid=True)
    assert len(grid) == 4 and {**base, "batch": 2, "visual": 10} in grid
    assert expand_sweep(base) == [base]


def _fake_result():
    base = {"batch": 1, "text": 20, "visual": 36}

    def entry(ms, b, **kw):
        return {"p50_ms": ms, "p90_ms": ms * 1.1, "p99_ms": ms * 1.2, "n": 5, "throughput": b / ms * 1e3,
                "gflops": 9.7 * b / ms * 1e3, "pct_peak": 9.7 * b / ms * 1e3 / 5, **kw}

    par = {"logits": metrics.parity(np.eye(3), np.eye(3) + 0.01, classes=True)}
    points = []
    for b in (1, 2, 32):
        points.append({"sizes": {**base, "batch": b}, "flops": 9.7e9 * b, "results": {
            "transformers": entry(80.0 * b, b, speedup_vs_transformers=1.0),
            "torch": entry(79.0 * b, b, speedup_vs_transformers=80 / 79),
            "ort-fp32": entry(30.0 * b, b, speedup_vs_transformers=80 / 30, parity=par),
            "ort-int8": entry(14.0 * b, b, speedup_vs_transformers=80 / 14, parity=par)}})
    res = {"options": {"model": "x", "base": base, "threads": 2, "warmup": 1, "iters": 5, "pad": True},
           "machine": {"cpu": "test cpu", "threads_used": 2, "versions": {"numpy": np.__version__}, "gpus": []},
           "gemm_peak": {"peak": 500.0, "peak_library": "onnxruntime", "by_library": {"onnxruntime": 500.0}},
           "backends": {"transformers": {"status": "ok", "load_s": 1.0, "first_call_ms": 90.0, "peak_rss_delta_mb": 400},
                        "torch": {"status": "ok", "load_s": 1.0, "first_call_ms": 90.0, "peak_rss_delta_mb": 400},
                        "ort-fp32": {"status": "ok", "load_s": 1.0, "first_call_ms": 40.0, "parity": par},
                        "ort-int8": {"status": "ok", "load_s": 1.0, "first_call_ms": 20.0, "parity": par},
                        "tensorrt-fp16": {"status": "skipped", "reason": "no TensorRT here"}},
           "points": points,
           "wrapper_overhead": {"wrapper": {"p50_ms": 30.3}, "raw_session": {"p50_ms": 30.0}, "overhead_pct": 1.0,
                                "iters": 10}}
    res["targets"] = evaluate_targets(res, TARGETS)
    return res


def test_targets_from_result():
    t = {x["target"]: x for x in _fake_result()["targets"]}
    assert t["ort_fp32_speedup"]["met"] and t["ort_fp32_speedup"]["value"] == pytest.approx(80 / 30)
    assert t["ort_int8_speedup"]["met"]
    assert t["ort_fp32_pct_peak_b32"]["value"] == pytest.approx(9.7 / 30 * 1e3 / 5)
    assert t["ort_fp32_pct_peak_b32"]["met"] is False  # 64.7% < 80%
    assert t["wrapper_overhead_pct"]["met"] is True


def test_report_files(tmp_path):
    pytest.importorskip("matplotlib")
    from vlexport.bench import report

    res = _fake_result()
    files = report.write_all(res, tmp_path, stem="b", reading="- a reading")
    data = json.loads(files["json"].read_text())
    assert set(data["points"][0]["results"]) == {"transformers", "torch", "ort-fp32", "ort-int8"}
    md = files["markdown"].read_text()
    for name in ("transformers", "ort-fp32", "ort-int8", "tensorrt-fp16", "no TensorRT here", "a reading", "test cpu"):
        assert name in md
    assert [p.name for p in files["plots"]] == ["b_latency_vs_batch.png"]
    assert files["plots"][0].read_bytes()[:4] == b"\x89PNG"
    from rich.console import Console

    console = Console(record=True, width=220)
    report.print_report(res, console)
    text = console.export_text()
    assert "ort-int8" in text and "MISSED" in text


def test_markdown_reports_gpu_device_time_beside_wall_time():
    """A TensorRT entry carries CUDA-event device time; the report shows both and says what each includes."""
    from vlexport.bench import report

    res = _fake_result()
    point = res["points"][0]["results"]
    assert "GPU device time" not in report.to_markdown(res)  # CPU-only results: no such section
    point["tensorrt-fp16"] = {**point["ort-fp32"], "p50_ms": 1.25,
                              "device": {**stats.latency_summary([0.0009, 0.001, 0.0011]),
                                         "method": "CUDA events around execute_async_v3: host<->device copies excluded"}}
    md = report.to_markdown(res)
    section = md.split("## GPU device time", 1)[1]
    assert "copies excluded" in section
    assert "| B=1 T=20 V=36 | tensorrt-fp16 | 1.250 | 1.000 |" in section


# each tiny graph from the session's shared artifact (fp32 + fp16 + int8), and once from a model id, which
# the harness builds itself (without --int8: then ort-int8 is skipped, with the reason)
HARNESS_RUNS = [(i, g, "artifact") for i, g in TINY_GRAPHS] + [(TINY_GRAPHS[-1][0], TINY_GRAPHS[-1][1], "model id")]


@pytest.mark.parametrize("model_id,graph,source", HARNESS_RUNS,
                         ids=[(i if g is None else f"{i}-{g}") + ("-built" if s == "model id" else "")
                              for i, g, s in HARNESS_RUNS])
def test_harness_end_to_end_tiny(model_id, graph, source, tiny_artifacts, tmp_path):
    """Every family's tiny model through the whole harness (a new family is picked up by the registry);
    an artifact with several graphs: each graph in its own run."""
    pytest.importorskip("torch")
    from vlexport._deps import available
    from vlexport.bench import report
    from vlexport.bench.harness import run_benchmark

    model = model_id if source == "model id" else str(tiny_artifacts[model_id])
    opts = BenchOptions(model, backends=("transformers", "torch", "ort-fp32", "ort-int8", "tensorrt-fp16"),
                        sweep={_example_axis(model_id, graph): [1, 2]}, iters=2, warmup=1, parity_samples=4, wrapper_iters=3,
                        gemm_peak=False, progress=False, build_kwargs={"int8": False}, graph=graph, threads=1)
    res = run_benchmark(opts)
    assert res["artifact"]["built"] == (source == "model id")
    assert res["backends"]["tensorrt-fp16"]["status"] == "skipped" or res["machine"]["gpus"]
    assert res["backends"]["torch"]["status"] == "ok"
    if graph is not None:
        assert res["model"]["graph"] == graph and len(res["model"]["graphs"]) > 1
        fam = families.get(res["model"]["family"]) if "family" in res["model"] else None
        hf = res["backends"]["transformers"]
        if fam is not None and not fam.hf_graphs:  # no per-graph transformers runner: skipped, saying so
            assert hf["status"] == "skipped" and "Family.hf_graphs" in hf["reason"], hf
        elif available("transformers"):  # the family's per-graph transformers runner (Family.hf_graphs)
            assert hf["status"] == "ok", hf
        assert graph in res["wrapper_overhead"]["call"]
        assert f"graph `{graph}`" in report.to_markdown(res)
    assert all("others_cores" in p["load"] for p in res["points"]) or not available("psutil")
    int8 = res["backends"]["ort-int8"]
    if source != "model id":  # a model id's artifact is built into a temporary folder, gone by now
        art = Artifact(res["artifact"]["path"])
        assert res["model"]["precisions"] == art.precisions(graph or art.graph_names[0])
    if "int8" in res["model"]["precisions"]:
        assert int8["status"] == "ok", int8
    else:  # built without --int8, or a graph that refuses int8: skipped with the reason
        assert int8["status"] == "skipped" and "int8" in int8["reason"], int8
    # the sweep's two sizes, and the base point (the axis at its opt size) when it is neither (a box head's rois)
    assert len(res["points"]) == len({1, 2, _opt(model_id, _example_axis(model_id, graph))})
    outputs = res["model"]["outputs"]
    for p in res["points"]:
        assert "torch" in p["results"]
        for name, e in p["results"].items():
            assert e["n"] == 2 and e["p50_ms"] > 0
            if name == "ort-int8":  # quantized: close in direction, not to 1e-3
                assert all(e["parity"][o]["cosine_min"] > 0.9 for o in outputs), e["parity"]
            elif name != "torch":
                assert all(e["parity"][o]["max_abs_err"] < 1e-3 for o in outputs)
    assert all(res["backends"]["ort-fp32"]["parity"][o]["cosine_min"] > 0.9999 for o in outputs)
    assert "overhead_pct" in res["wrapper_overhead"]
    assert res["targets"] == []  # the harness holds no targets; the benchmark scripts pass theirs
    files = report.write_all(res, tmp_path, plots=False)
    assert "ort-fp32" in files["markdown"].read_text()


def test_quantize_int8_small_graph(tmp_path):
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from vlexport.export.quantize import quantize_int8

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64),
                                torch.nn.GELU(), torch.nn.Linear(64, 10)).eval()
    x = torch.randn(4, 64)
    fp32 = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(fp32), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    info = quantize_int8(fp32, tmp_path / "m.int8.onnx")
    assert info["nodes_quantized"] >= 2 and info["kept_fp32"]  # the classifier stays fp32
    assert info["bytes"] > 0
    q = onnx.load(str(tmp_path / "m.int8.onnx"))
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in q.graph.node)
    xs = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    a = ort.InferenceSession(str(fp32)).run(None, {"x": xs})[0]
    b = ort.InferenceSession(str(tmp_path / "m.int8.onnx")).run(None, {"x": xs})[0]
    assert metrics.cosine(a, b) > 0.99


def test_multi_graph_artifact_needs_a_graph(tiny_artifacts):
    """An artifact with several graphs and no --graph is a clear error naming its graphs."""
    pytest.importorskip("torch")
    from vlexport.bench.harness import Context
    from vlexport.errors import ConfigError

    multi = [i for i, g in TINY_GRAPHS if g is not None]
    if not multi:
        pytest.skip("no family with several graphs")
    path = tiny_artifacts[multi[0]]
    graphs = families.describe_artifact(Artifact(path)).graphs
    names = [g.name for g in graphs]
    with pytest.raises(ConfigError) as err:
        Context(path, threads=1)
    assert all(n in str(err.value) for n in names) and "--graph" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Context(path, threads=1, graph="nope")
    assert "nope" in str(err.value) and names[0] in str(err.value)
    ctx = Context(path, threads=1, graph=names[-1])
    assert ctx.graph == names[-1] and ctx.output_names == graphs[-1].output_names


def test_suite_report_and_items_column(tmp_path):
    """Several runs in one JSON + Markdown; the throughput column is named after the items."""
    from vlexport.bench import report

    a, b = _fake_result(), _fake_result()
    for r, g, item in ((a, "vision", "images"), (b, "text", "texts")):
        r["model"] = {"architecture": "X", "graph": g, "graphs": ["vision", "text"]}
        r["options"]["item_name"] = item
        r["points"][0]["load"] = {"others_cores": 0.25, "self_cores": 1.9, "system_cores": 2.15, "wall_s": 3.0,
                                  "logical_cores": 2, "steal_cores": 0.0}
    files = report.write_suite([a, b], tmp_path, stem="s", plots=False, title="suite")
    md = files["markdown"].read_text()
    assert "## Graph `vision`" in md and "## Graph `text`" in md
    assert "| images/s |" in md and "| texts/s |" in md and "samples/s" not in md
    assert "0.25" in md  # the load of the point
    assert [r["model"]["graph"] for r in json.loads(files["json"].read_text())["runs"]] == ["vision", "text"]
    assert "| samples/s |" in report.to_markdown(_fake_result())  # one-graph runs: as before


def test_a_checkpoint_folder_is_benchmarked_against_its_own_weights(tmp_path):
    """A trained checkpoint (not random weights): bench builds it and its torch reference loads the folder's
    weights (parity then compares like with like); an artifact built from it needs reference= for that,
    since an artifact may not make vlexport read files outside its folder."""
    pytest.importorskip("torch")
    import visual_bert_kit as kit

    from vlexport.bench.harness import run_benchmark
    from vlexport.errors import ArtifactError

    folder = tmp_path / "ckpt"
    kit.make_hf_model("VisualBertForQuestionAnswering", seed=3).save_pretrained(folder)
    common = dict(backends=("torch", "ort-fp32"), iters=2, warmup=1, parity_samples=2, wrapper_iters=0,
                  gemm_peak=False, progress=False, threads=1, build_kwargs={"axes": kit.axes_for(
                      "VisualBertForQuestionAnswering"), "fp16": False})
    res = run_benchmark(BenchOptions(str(folder), **common))
    assert res["artifact"]["built"] and res["backends"]["torch"]["status"] == "ok"
    assert all(p["max_abs_err"] < 1e-4 for p in res["backends"]["ort-fp32"]["parity"].values())
    art = kit.build_small(folder, tmp_path / "art", "VisualBertForQuestionAnswering", fp16=False)
    with pytest.raises(ArtifactError, match="pass reference="):
        run_benchmark(BenchOptions(str(art), **common))
    res = run_benchmark(BenchOptions(str(art), reference=str(folder), **common))
    assert all(p["max_abs_err"] < 1e-4 for p in res["backends"]["ort-fp32"]["parity"].values())
