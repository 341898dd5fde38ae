#!/usr/bin/env python
"""Old vs new artifact speed, side by side in one process (the restructuring's no-regression check).

    python benchmarks/compare_old_new.py --old DIR_OLD --new DIR_NEW [--budget-s 30] [--json OUT]

DIR_OLD and DIR_NEW are two artifact folders of the same model, built by two vlexport versions
(e.g. artifact format 1 before the family split and format 2 after it). Per precision (fp32, fp16,
int8) the candidates are:

- old-raw:  an `onnxruntime.InferenceSession` on the OLD artifact's graph;
- new-raw:  an `onnxruntime.InferenceSession` on the NEW artifact's graph;
- new-load: the NEW runtime, `vlexport.load(DIR_NEW, precision=..., intra_op_num_threads=2,
            allow_spinning=False)` (the wrapper: input checks, defaults, finiteness check);
- old-raw-bis (fp32 only unless --control all/none): a second session on the OLD graph, an A/A
  control that shows how far two identical candidates drift apart in this run.

The old runtime cannot be imported next to the new one (both are the package `vlexport`), so the
old side is its graph through a raw session with the same options (the old `RuntimeModel` was a
thin wrapper over exactly that call; its overhead is not measured here).

Every session: CPU provider, intra_op_num_threads=2 (--threads), inter_op 1,
`session.intra_op.allow_spinning=0`, full graph optimization (the runtime's defaults). Feeds are
identical numpy arrays for every candidate (right-padded text and regions, seed 0). Timing is
interleaved: each iteration calls every candidate once, the order rotating by one each iteration,
so drift and other jobs on the machine hit all candidates alike. A point stops once --budget-s
seconds of timing are spent and at least --min-iters iterations are done (or at --max-iters).

Reported per point: p50/p90 per candidate; per precision the ratio new-raw/old-raw of the p50s and
the spread of the per-iteration paired ratios (p10..p90), and the wrapper overhead
new-load/new-raw (same graph). Compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")


# ------------------------------------------------------------------------------------ artifacts
def read_manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def graph_entries(manifest: dict) -> dict:
    """{precision: entry} of the (single) graph, for artifact format 1 and format 2."""
    if manifest.get("format_version") == 1:
        return manifest["graphs"]
    graphs = manifest["graphs"]
    if len(graphs) != 1:
        raise SystemExit(f"expected a one-graph artifact, got graphs {list(graphs)}")
    return next(iter(graphs.values()))["onnx"]


def input_specs(manifest: dict) -> list[dict]:
    if manifest.get("format_version") == 1:
        return manifest["inputs"]
    return next(iter(manifest["graphs"].values()))["inputs"]


def graph_path(folder: Path, manifest: dict, precision: str) -> Path | None:
    entry = graph_entries(manifest).get(precision)
    return Path(folder) / entry["file"] if entry else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def graph_digest(path: Path) -> str:
    """sha256 over the graph file and its external-data files (name order)."""
    files = [path] + sorted(p for p in path.parent.iterdir()
                            if p.name.startswith(path.name) and p.name.endswith((".data", ".weights")))
    return hashlib.sha256("".join(sha256(p) for p in files).encode()).hexdigest()


def canonical_digest(path: Path) -> str | None:
    """sha256 of the graph with the exporter's provenance stripped (per-node doc_string and
    metadata_props: torch.onnx's namespace / class_hierarchy / stack_trace, which hold Python module
    names and source paths) plus its external data; None without the onnx package."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    h = hashlib.sha256(model.SerializeToString(deterministic=True))
    for p in sorted(q for q in path.parent.iterdir()
                    if q.name.startswith(path.name) and q.name.endswith((".data", ".weights"))):
        h.update(sha256(p).encode())
    return h.hexdigest()


def simplifier_kept(manifest: dict) -> str:
    s = graph_entries(manifest)["fp32"].get("simplifier") or {}
    return (f"{s.get('kept', 'raw')} (tool {s.get('tool')}, raw {s.get('raw_ms')} ms vs simplified "
            f"{s.get('simplified_ms')} ms)")


# ---------------------------------------------------------------------------------------- feeds
def make_feeds(specs: list[dict], sizes: dict, seed: int = 0) -> dict:
    """numpy feeds for VisualBERT-style inputs: right-padded masks, [PAD]=0 beyond the text length."""
    rng = np.random.default_rng(seed)
    b, t, v = sizes["batch"], sizes["text"], sizes["visual"]
    tlen = rng.integers(max(1, t // 2), t + 1, size=b)
    tlen[0] = t
    vlen = rng.integers(max(1, v // 2), v + 1, size=b)
    vlen[0] = v
    tmask = np.arange(t)[None, :] < tlen[:, None]
    vmask = np.arange(v)[None, :] < vlen[:, None]
    feeds = {}
    for s in specs:
        shape = tuple(sizes[d] if isinstance(d, str) else int(d) for d in s["dims"])
        name = s["name"]
        if name == "attention_mask":
            x = tmask.astype(np.int64)
        elif name == "visual_attention_mask":
            x = vmask.astype(np.int64)
        elif name == "input_ids":
            x = rng.integers(s["low"], s["high"], size=shape, dtype=np.int64) * tmask
        elif name == "token_type_ids":
            x = np.zeros(shape, np.int64)
        elif name == "visual_token_type_ids":
            x = np.ones(shape, np.int64)
        elif s["dtype"] == "float32":
            x = rng.standard_normal(shape).astype(np.float32)
            if len(shape) == 3 and shape[1] == v:
                x *= vmask[:, :, None]
        elif s["dtype"] == "int64":
            x = rng.integers(s.get("low") or 0, s.get("high") or 2, size=shape, dtype=np.int64)
        else:
            raise SystemExit(f"no feed rule for input {name} ({s['dtype']})")
        feeds[name] = np.ascontiguousarray(x)
    return feeds


# ------------------------------------------------------------------------------------ candidates
def raw_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return sess, (lambda feeds: sess.run(names, feeds)[0])


def wrapper(folder: Path, precision: str, threads: int):
    import vlexport

    model = vlexport.load(folder, backend="onnxruntime", precision=precision, intra_op_num_threads=threads,
                          allow_spinning=False, providers=["CPUExecutionProvider"])
    return model, (lambda feeds: model(**feeds).logits)


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "flags": [], "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.lower().startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")),
                     set())
        info["flags"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                                     "avx512_bf16", "avx512_fp16", "amx_int8") if f in flags]
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    info["python"] = platform.python_version()
    return info


# ---------------------------------------------------------------------------------------- timing
def time_point(cands: dict, feeds: dict, budget_s: float, min_iters: int, max_iters: int, warmup: int) -> dict:
    names = list(cands)
    for _ in range(warmup):
        for n in names:
            cands[n](feeds)
    times = {n: [] for n in names}
    spent, i = 0.0, 0
    while i < max_iters and (i < min_iters or spent < budget_s):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            t = time.perf_counter()
            cands[n](feeds)
            dt = time.perf_counter() - t
            times[n].append(dt)
            spent += dt
        i += 1
    return {"iterations": i, "timed_s": round(spent, 2), "times": times}


def pct(a, q):
    return float(np.percentile(np.asarray(a, dtype=np.float64), q))


def paired(times: dict, num: str, den: str) -> dict:
    r = np.asarray(times[num]) / np.asarray(times[den])
    p50 = pct(times[num], 50) / pct(times[den], 50)
    return {"ratio_p50": p50, "paired_median": pct(r, 50), "paired_p10": pct(r, 10), "paired_p90": pct(r, 90)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="artifact folder built by the old version")
    ap.add_argument("--new", type=Path, required=True, help="artifact folder built by the new version")
    ap.add_argument("--points", default="1,20,36;32,20,36", help="B,T,V points separated by ';'")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=30.0, help="timing seconds per point (all candidates)")
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--max-iters", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--control", choices=("none", "fp32", "all"), default="fp32",
                    help="add a second session on the old graph (A/A control) for these precisions")
    ap.add_argument("--json", type=Path, help="also write the figures (and raw samples) here")
    args = ap.parse_args(argv)

    import vlexport

    old_m, new_m = read_manifest(args.old), read_manifest(args.new)
    specs_old, specs_new = input_specs(old_m), input_specs(new_m)
    strip = [{k: s[k] for k in ("name", "dims", "dtype", "low", "high")} for s in specs_new]
    if strip != [{k: s[k] for k in ("name", "dims", "dtype", "low", "high")} for s in specs_old]:
        raise SystemExit("the two artifacts describe different inputs: not the same model?")
    precisions = [p for p in args.precisions.split(",")
                  if graph_path(args.old, old_m, p) and graph_path(args.new, new_m, p)]
    mach = machine()
    load0 = os.getloadavg()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores, flags {' '.join(mach['flags'])}, onnxruntime "
          f"{mach.get('onnxruntime')}, {args.threads} intra-op threads, allow_spinning=0; load average at start "
          f"{load0[0]:.2f} (other jobs may share the cores: compare ratios within this run)")
    print(f"old: {args.old} (format {old_m.get('format_version')}, simplifier kept {simplifier_kept(old_m)})")
    print(f"new: {args.new} (format {new_m.get('format_version')}, simplifier kept {simplifier_kept(new_m)}); "
          f"new runtime from {vlexport.__file__}")
    print("note: the old runtime cannot be imported next to the new one (same package name), so the old side is "
          "its graph through a raw onnxruntime session; new-load is the new vlexport.load wrapper.")

    graphs, cands, keep = {}, {}, []
    for p in precisions:
        po, pn = graph_path(args.old, old_m, p), graph_path(args.new, new_m, p)
        graphs[p] = {"old": str(po), "new": str(pn), "old_sha": graph_digest(po), "new_sha": graph_digest(pn)}
        graphs[p]["identical"] = graphs[p]["old_sha"] == graphs[p]["new_sha"]
        co, cn = canonical_digest(po), canonical_digest(pn)
        graphs[p].update(old_canonical=co, new_canonical=cn, canonical_identical=co is not None and co == cn)
        s, cands[f"old-raw {p}"] = raw_session(po, args.threads)
        keep.append(s)
        if args.control == "all" or args.control == p:
            s, cands[f"old-raw-bis {p}"] = raw_session(po, args.threads)
            keep.append(s)
        s, cands[f"new-raw {p}"] = raw_session(pn, args.threads)
        keep.append(s)
        model, cands[f"new-load {p}"] = wrapper(args.new, p, args.threads)
        keep.append(model)
        wrapped = Path(model.backend.session._model_path) if hasattr(model.backend.session, "_model_path") else None
        if wrapped is not None and wrapped.resolve() != pn.resolve():
            raise SystemExit(f"the wrapper opened {wrapped}, not {pn}")
        print(f"{p}: old {po.name} sha256 {graphs[p]['old_sha'][:12]}, new {pn.name} sha256 "
              f"{graphs[p]['new_sha'][:12]} -> {'identical' if graphs[p]['identical'] else 'DIFFERENT'} bytes; "
              f"{'identical' if graphs[p]['canonical_identical'] else 'DIFFERENT'} without the exporter's node "
              f"metadata (source paths, module names)")

    result = {"machine": mach, "load_average_start": load0, "old": str(args.old), "new": str(args.new),
              "graphs": graphs, "simplifier": {"old": simplifier_kept(old_m), "new": simplifier_kept(new_m)},
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "points": []}
    for spec in args.points.split(";"):
        b, t, v = (int(x) for x in spec.split(","))
        sizes = {"batch": b, "text": t, "visual": v}
        feeds = make_feeds(specs_new, sizes)
        # parity on these feeds before timing: old vs new graph, wrapper vs its raw session
        outs = {n: np.asarray(f(feeds)) for n, f in cands.items()}
        parity = {}
        for p in precisions:
            parity[p] = {"old_vs_new_max_abs": float(np.max(np.abs(outs[f"old-raw {p}"] - outs[f"new-raw {p}"]))),
                         "wrapper_vs_raw_max_abs": float(np.max(np.abs(outs[f"new-load {p}"] - outs[f"new-raw {p}"])))}
        r = time_point(cands, feeds, args.budget_s, args.min_iters, args.max_iters, args.warmup)
        times = r.pop("times")
        stats = {n: {"p50_ms": pct(x, 50) * 1e3, "p90_ms": pct(x, 90) * 1e3, "min_ms": min(x) * 1e3, "n": len(x)}
                 for n, x in times.items()}
        ratios = {}
        for p in precisions:
            ratios[p] = {"new_vs_old": paired(times, f"new-raw {p}", f"old-raw {p}"),
                         "wrapper_vs_raw": paired(times, f"new-load {p}", f"new-raw {p}")}
            if f"old-raw-bis {p}" in times:
                ratios[p]["control_aa"] = paired(times, f"old-raw-bis {p}", f"old-raw {p}")
        point = {"sizes": sizes, **r, "load_average_end": os.getloadavg(), "stats": stats, "ratios": ratios,
                 "parity": parity}
        if args.json:
            point["samples_ms"] = {n: [round(x * 1e3, 4) for x in xs] for n, xs in times.items()}
        result["points"].append(point)
        _print_point(point, precisions)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def _print_point(point: dict, precisions) -> None:
    s = point["sizes"]
    print(f"\n### B={s['batch']} T={s['text']} V={s['visual']}: {point['iterations']} interleaved iterations, "
          f"{point['timed_s']} s timed, load average at end {point['load_average_end'][0]:.2f}")
    print("| candidate | p50 ms | p90 ms | min ms | n |\n| --- | ---: | ---: | ---: | ---: |")
    for n, st in point["stats"].items():
        print(f"| {n} | {st['p50_ms']:.3f} | {st['p90_ms']:.3f} | {st['min_ms']:.3f} | {st['n']} |")
    print("\n| precision | new/old (p50s) | paired new/old median [p10, p90] | A/A control (p50s) [p10, p90] "
          "| wrapper/raw (p50s) | paired wrapper/raw median [p10, p90] | old-vs-new max abs | wrapper-vs-raw max abs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in precisions:
        r, par = point["ratios"][p], point["parity"][p]
        nv, w, c = r["new_vs_old"], r["wrapper_vs_raw"], r.get("control_aa")
        ctl = f"{c['ratio_p50']:.3f} [{c['paired_p10']:.3f}, {c['paired_p90']:.3f}]" if c else "-"
        print(f"| {p} | {nv['ratio_p50']:.3f} | {nv['paired_median']:.3f} [{nv['paired_p10']:.3f}, "
              f"{nv['paired_p90']:.3f}] | {ctl} | {w['ratio_p50']:.3f} | {w['paired_median']:.3f} "
              f"[{w['paired_p10']:.3f}, {w['paired_p90']:.3f}] | {par['old_vs_new_max_abs']:.3g} | "
              f"{par['wrapper_vs_raw_max_abs']:.3g} |")


if __name__ == "__main__":
    sys.exit(main())
