#!/usr/bin/env python
"""How fast ONNX Runtime's int4 kernel (MatMulNBits, accuracy_level 4) reads a Llama-7B layer's weights at
M=1 (a decode step), by block size, with and without zero points: why the build tries block 128 first.

    python benchmarks/run_int4_block_size.py              # 4 layers' projections, ~0.45 GB per variant
    python benchmarks/run_int4_block_size.py --layers 2 --stem smoke

Method: one graph per variant holding `--layers` x the four fused projections of a Llama-2-7B layer
(q/k/v 4096 -> 12288, o 4096 -> 4096, gate/up 4096 -> 22016, down 11008 -> 4096) as independent MatMulNBits
nodes on random N(0, 0.02) weights packed by ORT's own helper (vlexport.towers.llama_numpy.quantize_nbits),
so a call reads every weight once and nothing else (more than the CPU's caches). 2 intra-op threads; the
median of `--calls` calls after 3 warm-ups; the variants run interleaved, `--rounds` rounds in a rotated
order. Read rate = weight bytes (packed + scales + zero points) / time, against a 2-thread read-only numpy
pass measured around each round (vlexport.bench's figures move with this VM's other tenants; compare the
variants of one round). Also the int4 rounding error of one 4096 x 4096 projection (relative Frobenius, the
weights alone; the kernel's int8 activations come on top, per block too). Writes
benchmarks/results/<stem>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_llama_decoder_full import bandwidth  # noqa: E402
from vlexport.bench.harness import CpuLoad  # noqa: E402
from vlexport.bench.machine import machine_info  # noqa: E402
from vlexport.towers.llama_numpy import dequantize_nbits, quantize_nbits  # noqa: E402

HIDDEN, INTER = 4096, 11008
SHAPES = [(3 * HIDDEN, HIDDEN), (HIDDEN, HIDDEN), (2 * INTER, HIDDEN), (HIDDEN, INTER)]  # (N, K) per layer
VARIANTS = [(32, False), (32, True), (64, False), (128, False), (128, True), (256, False)]
DEFAULT_STEM = "2026-12-06-int4-block-size-cpu"


def graph(layers: int, block: int, symmetric: bool, seed: int = 0):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, nbytes = [], [], 0
    for layer in range(layers):
        for j, (N, K) in enumerate(SHAPES):
            name = f"l{layer}.p{j}"
            packed, scales, zp = quantize_nbits(rng.standard_normal((N, K), dtype=np.float32) * 0.02, 4, block,
                                                symmetric)
            parts = [(name + ".q", packed), (name + ".s", scales)] + ([(name + ".z", zp)] if zp is not None else [])
            inits += [numpy_helper.from_array(a, n) for n, a in parts]
            nbytes += sum(a.nbytes for _, a in parts)
            nodes.append(helper.make_node("MatMulNBits", ["x" if K == HIDDEN else "h"] + [n for n, _ in parts],
                                          [name + ".y"], domain="com.microsoft", K=K, N=N, bits=4, block_size=block,
                                          accuracy_level=4))
    g = helper.make_graph(nodes, "projections", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, HIDDEN]),
                                                 helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, INTER])],
                          [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString(), nbytes


def rounding_error(block: int, symmetric: bool) -> float:
    w = np.random.default_rng(1).standard_normal((HIDDEN, HIDDEN), dtype=np.float32) * 0.02
    back = dequantize_nbits(*quantize_nbits(w, 4, block, symmetric), HIDDEN, 4)
    return float(np.linalg.norm(back - w) / np.linalg.norm(w))


def timed(session, feeds, calls: int) -> float:
    for _ in range(3):
        session.run(None, feeds)
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        session.run(None, feeds)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--calls", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stem", default=DEFAULT_STEM)
    ap.add_argument("--from-json", type=Path, help="only re-render the Markdown and the plot of a results JSON")
    args = ap.parse_args(argv)
    out = Path(__file__).parent / "results" if args.stem != "smoke" else Path("/tmp")
    if args.from_json:
        R = json.loads(args.from_json.read_text())
        args.from_json.with_suffix(".md").write_text(markdown(R))
        print(f"wrote {args.from_json.with_suffix('.md')}, {plot(R, args.from_json.with_suffix('.png'))}")
        return 0

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sessions, sizes = {}, {}
    for block, sym in VARIANTS:
        print(f"writing block {block}{' symmetric' if sym else ''} ...", flush=True)
        blob, sizes[block, sym] = graph(args.layers, block, sym)
        sessions[block, sym] = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        del blob
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((1, HIDDEN), dtype=np.float32),
             "h": rng.standard_normal((1, INTER), dtype=np.float32)}
    times = {v: [] for v in VARIANTS}
    reads = []
    with CpuLoad() as load:
        for r in range(args.rounds):
            before = bandwidth()["read_gbps"]
            for v in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
                times[v].append(timed(sessions[v], feeds, args.calls))
            reads.append((before + bandwidth()["read_gbps"]) / 2)
            print(f"round {r + 1}: read bandwidth {reads[-1]:.1f} GB/s", flush=True)
    others = load.summary().get("others_cores")
    rows = []
    for v in VARIANTS:
        t = float(np.median(times[v]))
        rate = sizes[v] / t / 1e9
        rows.append({"block_size": v[0], "zero_points": not v[1], "weight_gb": round(sizes[v] / 1e9, 4),
                     "ms": round(t * 1e3, 2), "read_gbps": round(rate, 1),
                     "fraction_of_read_bw": round(rate / float(np.median(reads)), 3),
                     "per_round_ms": [round(x * 1e3, 2) for x in times[v]],
                     "rounding_error": round(rounding_error(*v), 4)})
    R = {"machine": machine_info(threads=2), "layers": args.layers, "calls": args.calls, "rounds": args.rounds,
         "read_bandwidth_gbps": [round(x, 1) for x in reads], "other_processes_cores": others, "rows": rows}
    (out / f"{args.stem}.json").write_text(json.dumps(R, indent=1))
    (out / f"{args.stem}.md").write_text(markdown(R))
    plot(R, out / f"{args.stem}.png")
    print(markdown(R))
    return 0


def plot(R: dict, path: Path) -> Path:
    """Time per call and share of the read bandwidth by block size, with and without zero points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for zp, style in ((True, "o-"), (False, "s--")):
        rows = [r for r in R["rows"] if r["zero_points"] == zp]
        x = [r["block_size"] for r in rows]
        label = "with zero points" if zp else "symmetric (no zero points)"
        a.plot(x, [r["ms"] for r in rows], style, label=label)
        b.plot(x, [100 * r["fraction_of_read_bw"] for r in rows], style, label=label)
    for ax, ylabel in ((a, "time per call (ms)"), (b, "read rate, % of the 2-thread read bandwidth")):
        ax.set_xscale("log", base=2)
        blocks = sorted({r["block_size"] for r in R["rows"]})
        ax.set_xticks(blocks, [str(x) for x in blocks])
        ax.set(xlabel="MatMulNBits block size", ylabel=ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    a.set_ylim(bottom=0)
    b.set_ylim(0, 105)
    m = R["machine"]
    fig.suptitle(f"int4 MatMulNBits at M=1, {R['layers']} Llama-7B layers' projections; {m.get('cpu', '')}, 2 threads, "
                 f"{m.get('date', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(R: dict) -> str:
    m = R["machine"]
    flags = " ".join(f for f in m.get("cpu_flags", []) if f.startswith(("avx", "amx")))
    lines = ["# int4 MatMulNBits at M=1 by block size (a Llama-7B layer's projections), ONNX Runtime CPU", "",
             f"Machine: {m.get('date', '')} {m.get('cpu', '')} ({m.get('logical_cores', '')} logical cores, 2 "
             f"threads; {flags}); onnxruntime {m.get('versions', {}).get('onnxruntime', '')}. "
             f"`python benchmarks/run_int4_block_size.py` "
             f"({R['layers']} layers' projections, median of {R['calls']} calls, {R['rounds']} interleaved "
             f"rounds; method in the script's docstring). Read bandwidth (2 threads, read-only) around the "
             f"rounds: {', '.join(map(str, R['read_bandwidth_gbps']))} GB/s; other processes used "
             f"{R['other_processes_cores']} cores.", "",
             "| block | zero points | weight bytes | time per call | read rate | of the read bandwidth | "
             "int4 rounding error (weights) |", "|---|---|---|---|---|---|---|"]
    for r in R["rows"]:
        lines.append(f"| {r['block_size']} | {'yes' if r['zero_points'] else 'no'} | {r['weight_gb']} GB | "
                     f"{r['ms']} ms | {r['read_gbps']} GB/s | {r['fraction_of_read_bw']:.0%} | "
                     f"{r['rounding_error']:.4f} |")
    lines += ["", "Reading: at M=1 the kernel spends per block (a scale, a zero point, the activations' int8 "
              "rounding per block), so on two cores small blocks are compute-bound and large ones approach the "
              "read bandwidth; larger blocks round coarser. The build tries block 128 first and keeps it where it "
              "passes the gate (vlexport.export.int4_search)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
