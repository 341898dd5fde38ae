#!/usr/bin/env python
"""VisionTextDualEncoder (ViT-B/16 + BERT-base, projection 512, random weights) on CPU: image and
text embeddings per second, transformers eager vs our reference vs ORT fp32 / fp16 / int8.

    python benchmarks/run_dual_encoder.py                        # build --fp16 --int8 into a temp folder, then bench
    python benchmarks/run_dual_encoder.py --artifact /tmp/de_full  # reuse a build (fp16 and int8 graphs)

Two runs in one process, one per graph (the harness times one graph per run), backends interleaved
within each: "vision" (pixel_values 3x224x224 -> image_embeds) at B=1 and B=32, then "text"
(16 tokens, randomly right-padded -> text_embeds) at B=1 and B=32. The issue's targets are checked
on the vision B=32 point: ORT fp32 >= 1.5x and ORT int8 >= 2.5x transformers eager. Then, unless
--no-optimizer-experiment, ONNX Runtime's transformer optimizer (onnxruntime.transformers.optimizer)
is tried on the artifact's fp32 vision graph and timed against the graph as built and against
transformers eager, interleaved, at B=1 and B=32 (the build pipeline itself is not changed).
Writes benchmarks/results/<date>-dual-encoder-cpu.{json,md} and one plot per graph. Machine load
(other processes' CPU use during each point, load average) is recorded in both files.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "google/vit-base-patch16-224+google-bert/bert-base-uncased"
# The CPU targets (2 threads, full-size seed composition, vision tower at B=32), checked in the report.
TARGETS = {"ort_fp32_speedup_b32": 1.5, "ort_int8_speedup_b32": 2.5}
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "FastGelu",
             "Gelu", "FusedMatMul", "MatMul", "Gemm", "Softmax", "Erf")


# ------------------------------------------------------------------------------ optimizer experiment
def _op_counts(model_proto) -> dict:
    counts: dict = {}
    for n in model_proto.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return {k: counts[k] for k in FUSED_OPS if k in counts}


def optimizer_experiment(path: Path, threads: int, batches, iters: int, budget_s: float, work: Path,
                         include_hf: bool = True) -> dict:
    """The artifact's fp32 vision graph as built vs the same graph through ORT's transformer optimizer
    (model_type "vit", python fusions; opt_level 0 and 1), each in an ORT session opened like
    vlexport.load's (ORT_ENABLE_ALL, `threads` intra-op threads, no spinning), timed interleaved with
    transformers eager on identical images; parity of each variant against the graph as built."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    from vlexport import families, metrics
    from vlexport.artifact import Artifact
    from vlexport.bench import timing as stats
    from vlexport.bench.harness import CpuLoad, _interleaved
    from vlexport.runtime.backends.onnxruntime import make_session

    art = Artifact(path)
    cfg = families.get(art.family).config_from_dict(art.config)
    v = cfg.vision_config
    src = art.onnx_file("vision", "fp32")
    out = {"graph": "vision", "source": str(src), "threads": threads,
           "what": "onnxruntime.transformers.optimizer.optimize_model(model_type='vit', num_heads, hidden_size, "
                   "opt_level) on the artifact's fp32 vision graph; every session ORT_ENABLE_ALL, "
                   f"{threads} intra-op threads, allow_spinning=0", "variants": {"as built": {}}}
    files = {"as built": src}
    graphs = {"as built": onnx.load(str(src), load_external_data=False)}
    for level in (0, 1):
        name = f"optimizer vit opt_level={level}"
        t = time.perf_counter()
        try:
            m = optimize_model(str(src), model_type="vit", num_heads=v.num_attention_heads, hidden_size=v.hidden_size,
                               opt_level=level, use_gpu=False)
            dest = work / f"vision.opt{level}.onnx"
            m.save_model_to_file(str(dest), use_external_data_format=False)
            files[name] = dest
            graphs[name] = m.model
            out["variants"][name] = {"optimize_s": round(time.perf_counter() - t, 1),
                                     "fused_ops": m.get_fused_operator_statistics()}
        except Exception as exc:  # an optimizer failure is a finding, not a crash
            out["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    for name, g in graphs.items():
        out["variants"].setdefault(name, {})["op_counts"] = _op_counts(g)
    del graphs
    for i, (name, f) in enumerate(files.items()):  # what ORT itself makes of each graph at session creation
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(work / f"vision.{i}.ort-optimized.onnx")
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        try:
            ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
            out["variants"][name]["session_op_counts"] = _op_counts(onnx.load(so.optimized_model_filepath,
                                                                             load_external_data=False))
        except Exception as exc:
            out["variants"][name]["session_op_counts_error"] = f"{type(exc).__name__}: {exc}"
        gc.collect()
    sessions = {name: make_session(f, threads, ["CPUExecutionProvider"], allow_spinning=False)
                for name, f in files.items()}
    calls = {f"ort-fp32 {name}": (lambda s: (lambda feeds: s.run(None, feeds)[0]))(s) for name, s in sessions.items()}
    if include_hf:
        from vlexport.families.vision_text_dual_encoder.hf_reference import graphs as hf_graphs
        from vlexport.runtime.backends.torch import reference_model

        torch.set_num_threads(threads)
        fn = hf_graphs(reference_model(art).eval(), art.config)["vision"]

        def hf(feeds):
            with torch.inference_mode():
                return fn(pixel_values=torch.from_numpy(feeds["pixel_values"]))["image_embeds"].numpy()

        calls = {"transformers": hf, **calls}
    rng = np.random.default_rng(7)
    out["points"] = []
    for b in batches:
        feeds = {"pixel_values": rng.uniform(-1, 1, size=(b, v.num_channels, v.image_size, v.image_size)).astype(np.float32)}
        outs = {name: c(feeds) for name, c in calls.items()}  # warm-up, and the outputs for parity
        with CpuLoad() as load:
            times = _interleaved(calls, feeds, iters, budget_s, 3)
        res = {}
        for name in calls:
            lat = stats.latency_summary(times[name])
            res[name] = {**lat, "throughput": stats.throughput(b, lat["p50_ms"] / 1e3)}
            if name != "ort-fp32 as built":
                p = metrics.parity(outs["ort-fp32 as built"], outs[name])
                res[name]["parity_vs_as_built"] = {"max_abs_err": p.get("max_abs_err"), "cosine": p.get("cosine")}
        if "transformers" in res:
            for e in res.values():
                e["speedup_vs_transformers"] = res["transformers"]["p50_ms"] / e["p50_ms"]
        out["points"].append({"sizes": {"batch": b}, "results": res, "load": load.summary()})
    del sessions, calls
    gc.collect()
    return out


def experiment_markdown(exp: dict) -> str:
    if not exp:
        return ""
    lines = ["## ORT transformer optimizer on the fp32 vision graph (experiment, not in the build)", "",
             exp["what"] + "; timed interleaved in this process with transformers eager, on identical images.", ""]
    lines += ["| variant | ops in the file | ops in the session (after ORT_ENABLE_ALL) | optimize s |", "|---|---|---|---|"]
    for name, v in exp["variants"].items():
        if "error" in v:
            lines.append(f"| {name} | failed: {v['error']} | | |")
            continue
        ops = ", ".join(f"{k} {n}" for k, n in v.get("op_counts", {}).items())
        sess = ", ".join(f"{k} {n}" for k, n in v.get("session_op_counts", {}).items()) or v.get("session_op_counts_error", "")
        lines.append(f"| {name} | {ops} | {sess} | {v.get('optimize_s', '')} |")
    lines += ["", "| sizes | variant | p50 ms | p90 ms | images/s | x eager | max abs err vs as built | cosine |",
              "|---|---|---|---|---|---|---|---|"]
    for p in exp["points"]:
        for name, e in p["results"].items():
            par = e.get("parity_vs_as_built") or {}
            lines.append(f"| B={p['sizes']['batch']} | {name} | {e['p50_ms']:.1f} | {e['p90_ms']:.1f} | "
                         f"{e['throughput']:.2f} | {e.get('speedup_vs_transformers', float('nan')):.2f}x | "
                         + (f"{par['max_abs_err']:.1e} | {par['cosine']:.6f} |" if par else "ref | |"))
    loads = [(p["sizes"]["batch"], p["load"]) for p in exp["points"] if p.get("load")]
    if loads:
        lines += ["", "Load during these timed loops: " + ", ".join(
            f"B={b}: other processes {ld['others_cores']:.2f} of {ld['logical_cores']} cores, this process "
            f"{ld['self_cores']:.2f}" for b, ld in loads) + "."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ reading
def reading(vision: dict, text: dict, exp: dict | None) -> str:
    """A short reading generated from the numbers (so it never drifts from them)."""
    from vlexport.bench.harness import _point

    lines = []
    for res, unit in ((vision, "images/s"), (text, "texts/s")):
        g = res["model"]["graph"]
        for p in res["points"]:
            r = p["results"]
            cells = ", ".join(f"{k} {e['throughput']:.1f}"
                              + (f" ({e['speedup_vs_transformers']:.2f}x)" if "speedup_vs_transformers" in e else "")
                              for k, e in r.items())
            sizes = " ".join(f"{k}={v}" for k, v in p["sizes"].items())
            lines.append(f"- {g} {sizes}, {unit} (x transformers eager): {cells}.")
    for t in vision.get("targets", []):
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        val = "-" if t["value"] is None else f"{t['value']:.2f}x"
        lines.append(f"- Target {t['target']} (>= {t['goal']:g}x): {val}, {verdict}.")
    for res in (vision, text):
        for name in ("ort-fp32", "ort-fp16", "ort-int8", "transformers"):
            par = next(iter((res["backends"].get(name, {}).get("parity") or {}).values()), None)
            if par:
                lines.append(f"- {res['model']['graph']} {name} vs torch on {par['n_rows']} random samples: max abs err "
                             f"{par['max_abs_err']:.2e}, min cosine {par['cosine_min']:.6f}.")
    for res in (vision, text):
        ld = res.get("load") or {}
        pts = [p["load"]["others_cores"] for p in res["points"] if p.get("load")]
        if ld and pts:
            busy = max(pts) >= 0.25
            lines.append(f"- Machine load, {res['model']['graph']} run: other processes used {min(pts):.2f}-{max(pts):.2f} "
                         f"of {ld.get('logical_cores')} cores during the timed loops (this run uses {res['options']['threads']} "
                         f"threads; this process got {ld.get('self_cores', float('nan')):.2f} cores on average); 1-min load "
                         f"average {ld.get('loadavg_1m_start', float('nan')):.2f} -> {ld.get('loadavg_1m_end', float('nan')):.2f}."
                         + (" **The machine was shared during this run**: absolute figures are low, and a 2-thread pool on "
                            "a contended core waits at every parallel section's barrier, which does not hit every backend "
                            "alike even though they are interleaved: read the ratios as indicative and rerun in a quiet "
                            "window for figures to quote." if busy else
                            " The machine was quiet: interleaving makes residual drift hit every backend alike."))
    if exp and exp.get("points"):
        p32 = next((p for p in exp["points"] if p["sizes"]["batch"] == 32), exp["points"][-1])
        r = p32["results"]
        base = r.get("ort-fp32 as built")
        best = min((k for k in r if k.startswith("ort-fp32 optimizer")), key=lambda k: r[k]["p50_ms"], default=None)
        if base and best:
            lines.append(f"- ORT transformer optimizer on the fp32 vision graph, B={p32['sizes']['batch']}: as built "
                         f"{base['p50_ms']:.1f} ms, best optimized ({best}) {r[best]['p50_ms']:.1f} ms = "
                         f"{base['p50_ms'] / r[best]['p50_ms']:.2f}x the graph as built"
                         + (f", {r[best]['speedup_vs_transformers']:.2f}x transformers eager (as built "
                            f"{base['speedup_vs_transformers']:.2f}x)" if "speedup_vs_transformers" in base else "")
                         + " (see the experiment section).")
    m = vision.get("backends", {}).get("transformers", {})
    if m.get("status") == "ok":
        lines.append("- transformers eager is `VisionTextDualEncoderModel.get_image_features` / `get_text_features` with "
                     "our weights and transformers' default attention (SDPA), `torch.inference_mode`, "
                     "OMP_WAIT_POLICY=PASSIVE; the ORT sessions are the artifact's graphs through `vlexport.load` "
                     "(`prepare` + `run_graph`, what get_*_features do).")
    lines.append("- Random weights: parity is against our PyTorch reference; throughput does not depend on the weights.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, help="a built artifact of the seed composition (fp16 and int8 graphs)")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--text-len", type=int, default=16)
    ap.add_argument("--backends", default="transformers,torch,ort-fp32,ort-fp16,ort-int8")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--point-seconds", type=float, default=30.0, help="stop a point's timed loop past this (>= 3 iterations)")
    ap.add_argument("--parity-samples", type=int, default=16)
    ap.add_argument("--no-optimizer-experiment", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--stem", default=None)
    ap.add_argument("--from-json", type=Path, default=None,
                    help="re-render the Markdown and plots from a result JSON this script wrote (no benchmarking)")
    args = ap.parse_args(argv)
    if args.from_json:
        return rerender(args.from_json, args.out, args.stem)

    from vlexport.bench.harness import prefer_passive_threads

    prefer_passive_threads()  # before torch loads (see the harness)
    from vlexport.bench import report
    from vlexport.bench.harness import BenchOptions, run_benchmark

    batches = [int(b) for b in args.batches.split(",") if b]
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vlexport-dual-bench-") as work:
        work = Path(work)
        if args.artifact:
            path, build_info = args.artifact, {"built": False, "path": str(args.artifact)}
        else:  # one build for both runs
            from vlexport.export.build import build

            t = time.perf_counter()
            path = Path(build(args.model, work / "artifact", random_weights=True, fp16=True, int8=True,
                              threads=args.threads))
            build_info = {"built": True, "build_seconds": round(time.perf_counter() - t, 1)}
        common = dict(backends=backends, threads=args.threads, iters=args.iters, warmup=1,
                      max_point_seconds=args.point_seconds, min_iters=3, parity_samples=args.parity_samples,
                      wrapper_iters=20, gemm_peak=False)
        vision = run_benchmark(BenchOptions(str(path), graph="vision", item_name="images", base={"batch": batches[0]},
                                            sweep={"batch": batches}, targets=TARGETS,
                                            **{**common, "gemm_peak": True}))  # the fp32 GEMM rate bounds fp32 gains
        gc.collect()
        text = run_benchmark(BenchOptions(str(path), graph="text", item_name="texts",
                                          base={"batch": batches[0], "text": args.text_len}, sweep={"batch": batches},
                                          **common))
        gc.collect()
        exp = None
        if not args.no_optimizer_experiment:
            exp = optimizer_experiment(path, args.threads, batches, args.iters, args.point_seconds, work,
                                       include_hf="transformers" in backends)
    for res in (vision, text):
        report.print_report(res)
    if exp:
        print(experiment_markdown(exp))
    stem = args.stem or f"{datetime.date.today().isoformat()}-dual-encoder-cpu"
    extra = {"model": args.model, "build": build_info, "optimizer_experiment": exp, "text_len": args.text_len,
             "command": "python benchmarks/run_dual_encoder.py " + " ".join(argv if argv is not None else sys.argv[1:]),
             "seconds": round(time.perf_counter() - t0, 1)}
    return write(vision, text, exp, args.out, stem, extra)


TITLE = "VisionTextDualEncoder (ViT-B/16 + BERT-base, projection 512, random weights) on CPU"


def write(vision, text, exp, out, stem, extra) -> int:
    from vlexport.bench import report

    files = report.write_suite(
        [vision, text], out, stem=stem, reading=reading(vision, text, exp), title=TITLE,
        headings=["Vision graph: image embeddings (pixel_values 3x224x224)",
                  f"Text graph: text embeddings ({extra.get('text_len', 16)} tokens, randomly right-padded)"],
        appendix=experiment_markdown(exp or {}) + (f"\nReproduce: `{extra['command']}`\n" if extra.get("command") else ""),
        extra=extra)
    print("wrote", *[str(f) for v in files.values() for f in (v if isinstance(v, list) else [v])], file=sys.stderr)
    return 0


def rerender(path: Path, out: Path, stem: str | None) -> int:
    import json

    data = json.loads(path.read_text())
    vision, text = data["runs"]
    extra = {k: v for k, v in data.items() if k not in ("title", "runs")}
    return write(vision, text, data.get("optimizer_experiment"), out, stem or path.stem, extra)


if __name__ == "__main__":
    raise SystemExit(main())
