"""Accuracy-aware int8: when the fully quantized graph misses its gate, find the fastest fix that passes.

1. Plain dynamic int8 (ORT's quantize_dynamic: one activation range per call).
2. Per-token activation scales with SmoothQuant-style smoothing (vlexport.export.per_token), the same fast
   MatMulInteger kernel: then the fewest most-sensitive MatMuls kept fp32 (up to half of them).
3. Plain int8 with the fewest most-sensitive MatMuls on the accurate block-wise kernel (MatMulNBits, 8-bit),
   or, if even all of them there miss, kept fp32.

Sensitivity, cheaply: one run of the fp32 graph (or its per-token rewrite) on calibration inputs records the
activation entering every quantizable MatMul; each node's int8 error is then simulated in numpy exactly as
ONNX Runtime's dynamic quantization computes it (activations: uint8, asymmetric, one range per call;
weights: int8, symmetric, per output channel) and measured as the relative error of that node's output.
Search: k = 0, 1, 2, 4, ... until the gate passes, then bisect down to the smallest passing k. Every
candidate is a real quantized graph run by ONNX Runtime on the whole validation set; the simulation only
orders the nodes. The chosen graph is checked on held-out sets, and the trade-off (every candidate: its
activations, kept nodes, worst cosine, top-1, time per call) is recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

DEFAULT_OPS = ("MatMul", "Gemm")


def candidates(model, op_types=DEFAULT_OPS, exclude=()) -> list[dict]:
    """The MatMul/Gemm nodes with a constant 2-D weight the quantizer would touch:
    [{"name", "input", "weight", "transposed"}]."""
    inits = {t.name: t for t in model.graph.initializer}
    skip = set(exclude)
    out = []
    for n in model.graph.node:
        if n.op_type not in op_types or n.name in skip or len(n.input) < 2:
            continue
        w = inits.get(n.input[1])
        if w is None or len(w.dims) != 2:
            continue
        trans = n.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in n.attribute)
        out.append({"name": n.name, "op_type": n.op_type, "input": n.input[0], "weight": w.name, "transposed": trans})
    return out


def capture_inputs(model, nodes: list[dict], feeds_list, threads: int | None = None) -> dict:
    """{node name: [activation per call]} from running the fp32 graph with those activations as extra outputs."""
    import tempfile

    import onnx

    from vlexport.runtime.backends.onnxruntime import make_session

    have = {o.name for o in model.graph.output}
    wanted = []
    for nd in nodes:
        if nd["input"] not in have and nd["input"] not in wanted:
            wanted.append(nd["input"])
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in wanted)
    with tempfile.TemporaryDirectory(prefix="vlexport-int8-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="probe.onnx.data", size_threshold=1024)
        del model
        sess = make_session(path, threads)
    names = [nd["input"] for nd in nodes]
    unique = list(dict.fromkeys(names))
    acts = {nd["name"]: [] for nd in nodes}
    for feeds in feeds_list:
        values = dict(zip(unique, sess.run(unique, feeds)))
        for nd in nodes:
            acts[nd["name"]].append(values[nd["input"]])
    return acts


def _dynamic_uint8(x: np.ndarray, reduce_range: bool) -> np.ndarray:
    """x quantized and dequantized as DynamicQuantizeLinear does (range always includes 0; always the
    full uint8 range: reduce_range narrows only the weights, measured against onnxruntime 1.32)."""
    qmax = 255.0
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / qmax if hi > lo else 1.0
    zp = np.clip(np.round(-lo / scale), 0, qmax)
    return (np.clip(np.round(x / scale) + zp, 0, qmax) - zp) * scale


def _int8_per_channel(w: np.ndarray, per_channel: bool, reduce_range: bool) -> np.ndarray:
    """(K, N) weight quantized symmetric int8, per output column when per_channel; reduce_range: onnxruntime's
    7-bit weights, [-64, 64] (scale absmax / 64)."""
    qmax = 64.0 if reduce_range else 127.0
    amax = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max(keepdims=True)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    return np.clip(np.round(w / scale), -qmax, qmax) * scale


def sensitivity(fp32_path: Path, feeds_list, exclude=(), per_channel: bool = True, reduce_range: bool | None = None,
                threads: int | None = None) -> list[dict]:
    """Every quantizable node's simulated int8 output error, most sensitive first:
    [{"name", "rel_error", "outlier_ratio"}] (outlier_ratio: the largest channel's max |x| over the median
    channel's: how badly one activation range per call fits)."""
    import onnx
    from onnx import numpy_helper

    if reduce_range is None:  # as quantize_int8 decides it on this machine
        from vlexport.export.quantize import saturating_cpu

        reduce_range = saturating_cpu()
    model = onnx.load(str(fp32_path), load_external_data=True)
    nodes = candidates(model, exclude=exclude)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
               if t.name in {nd["weight"] for nd in nodes}}
    acts = capture_inputs(model, nodes, feeds_list, threads)  # adds outputs to the model, then frees it
    out = []
    for nd in nodes:
        w = weights[nd["weight"]].astype(np.float32)
        w = w.T if nd["transposed"] else w
        wq = _int8_per_channel(w, per_channel, reduce_range)
        num = den = 0.0
        chan_max = None
        for x in acts[nd["name"]]:
            x2 = x.reshape(-1, x.shape[-1]).astype(np.float32)
            y = x2 @ w
            yq = _dynamic_uint8(x2, reduce_range) @ wq
            num += float(((yq - y) ** 2).sum())
            den += float((y ** 2).sum())
            m = np.abs(x2).max(axis=0)
            chan_max = m if chan_max is None else np.maximum(chan_max, m)
        med = float(np.median(chan_max)) if chan_max is not None else 0.0
        out.append({"name": nd["name"], "op_type": nd["op_type"],
                    "rel_error": float(np.sqrt(num / den)) if den > 0 else 0.0,
                    "outlier_ratio": float(chan_max.max() / med) if med > 0 else 0.0})
    out.sort(key=lambda r: -r["rel_error"])
    return out


def search(ranked: list[str], try_k, n_max: int | None = None, known: dict | None = None) -> tuple[int, list[dict]]:
    """The smallest k for which try_k(k) passes (try_k returns a dict with "passed"), trying 0, 1, 2, 4, ...
    then bisecting (pass is assumed to get likelier as k grows). Returns (k, every trial run, in order); k is
    None when even k = n_max fails. known: {k: result} already measured (not run again, not returned)."""
    n_max = len(ranked) if n_max is None else min(n_max, len(ranked))
    trials, results = [], dict(known or {})

    def run(k):
        if k not in results:
            t = time.perf_counter()
            r = try_k(k)
            r = {**r, "k": k, "seconds": round(time.perf_counter() - t, 2)}
            results[k] = r
            trials.append(r)
        return results[k]["passed"]

    if run(0):
        return 0, trials
    lo, k = 0, 1  # lo: the largest k known to fail
    while k < n_max and not run(k):
        lo, k = k, min(2 * k, n_max)
    if k >= n_max and not run(n_max):
        return None, trials
    hi = k  # passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(mid):
            hi = mid
        else:
            lo = mid
    return hi, trials


# ----------------------------------------------------------------------------- the build's int8 step

STRESS_SAMPLES = 40  # random-token stress inputs: reported, and gated only on NaN/inf
OPT_CASES = 6  # extra validation cases at the opt shape (largest batch): where users run, and where a trained
# model's int8 error was largest (36 detector regions: worst-row cosine 0.971 while draws over the whole range,
# mostly shorter, passed)


def _opt_sizes(axes: dict, batch: int | None = None) -> dict:
    sizes = {n: r.opt for n, r in axes.items()}
    if batch is not None and "batch" in axes:
        sizes["batch"] = max(axes["batch"].min, min(batch, axes["batch"].max))
    return sizes


def _ms_per_call(run, feeds, runs: int = 10) -> float:
    run(feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 3)


HOLDOUT_ROUNDS = 2  # held-out validation sets the chosen int8 graph is checked on, at most


PER_TOKEN_MAX_FP32_SHARE = 0.5  # of the MatMuls the per-token search may keep fp32 (beyond it: the plain search)


def _search_round(trial, name, axes, make_inputs, threads, note, state):
    """One search: plain int8; else per-token int8 (vlexport.export.per_token) with the fewest most-sensitive
    MatMuls kept fp32 (up to PER_TOKEN_MAX_FP32_SHARE); else plain int8 with the fewest most-sensitive MatMuls
    on the accurate (block-wise) kernel, or kept fp32. Per-token comes before the accurate kernel because it
    keeps MatMulInteger's speed (a trained MiniLM text side at B=32: 2.5x transformers eager, where the
    accurate kernel's graph ran at fp32's 2.0x). Returns ((base, accurate nodes, fp32 nodes), fallback,
    trials); `state` holds what is computed once (the rankings, the per-token graph) across rounds."""
    from vlexport.errors import ValidationError

    trials = []
    if state.get("quantize_heads"):  # the output heads quantized too (GraphSpec.int8_quantize_heads), else fp32
        heads = trial("plain_heads", [], [])
        trials.append({**heads, "k": 0})
        if heads["passed"]:
            return ("plain_heads", [], []), None, trials
    plain = trial("plain", [], [])
    trials.append({**plain, "k": 0})
    if plain["passed"]:
        return ("plain", [], []), None, trials
    if "calib" not in state:  # the first round (a held-out round repeats the search, not the note)
        note(f"plain int8 misses the gate ({plain['failed']}); trying per-token activation scales, then ranking "
             f"MatMuls by simulated int8 error")
        rng = np.random.default_rng(11)
        state["calib"] = [make_inputs(_opt_sizes(axes, 8), rng, True) for _ in range(4)]
    if "per_token" not in state:
        from vlexport.export.per_token import per_token_graph

        state["per_token_facts"] = per_token_graph(state["paths"]["plain"], state["paths"]["per_token"],
                                                   state["calib"], threads=threads)
        state["per_token"] = sensitivity(state["paths"]["per_token"], state["calib"], threads=threads,
                                         reduce_range=False)  # full 8 bits: signed with VNNI, else unsigned
    names = [r["name"] for r in state["per_token"]]
    start = trial("per_token", [], [])
    trials.append({**start, "k": 0})
    k, tried = search(names, lambda k: trial("per_token", [], names[:k]),
                      n_max=int(len(names) * PER_TOKEN_MAX_FP32_SHARE), known={0: start})
    trials += tried
    if k is not None:
        return ("per_token", [], names[:k]), "per_token", trials
    if "plain" not in state:
        state["plain"] = sensitivity(state["paths"]["plain"], state["calib"], threads=threads,
                                     reduce_range=state["reduce_range"])
    ops = {r["name"]: r["op_type"] for r in state["plain"]}
    names = [r["name"] for r in state["plain"]]
    for fallback in ("accurate_int8", "fp32"):
        def split(k, fb=fallback):
            # accurate_int8: the k most sensitive nodes on the accurate kernel, the rest plain dynamic int8;
            # fp32: every node on the accurate kernel except the k most sensitive, kept fp32
            top, rest = (names[:k], []) if fb == "accurate_int8" else (names[k:], names[:k])
            return ("plain", [n for n in top if ops.get(n) == "MatMul"],
                    rest + [n for n in top if ops.get(n) != "MatMul"])  # Gemm has no accurate kernel

        known = {0: plain} if fallback == "accurate_int8" else {0: trials[-1]}  # k=0 here: all accurate
        k, tried = search(names, lambda k: trial(*split(k)), known=known)
        trials += tried
        if k is not None:
            return split(k), fallback, trials
    raise ValidationError(f"the int8 '{name}' graph misses the gate even with every MatMul kept fp32 "
                          f"({trials[-1]['failed']}); build without --int8")


def quantize_gated(fp32_path: Path, out_path: Path, graph, axes: dict, reference, gate: dict, *, runner,
                   samples: int, seen: dict, threads=None, make_inputs=None, keep_weight_shapes=(),
                   progress=None, note=print, reduce_range: bool | None = None,
                   quantize_heads: bool = False) -> tuple[dict, dict]:
    """The int8 graph of `fp32_path` that passes `gate`: plain dynamic int8, else per-token activation scales
    with the fewest sensitive MatMuls kept fp32, else the fewest sensitive MatMuls on the accurate
    (block-wise) kernel, or failing that kept fp32 (see _search_round). Returns (quantizer facts + "search",
    validation report); raises ValidationError when nothing passes. `runner(path)` -> a feeds -> outputs
    callable; `make_inputs` (sizes, rng, pad) -> feeds: realistic inputs where the family has them.
    reduce_range: 7-bit weights for plain int8, unsigned 8-bit ones for per-token (None: as this CPU needs,
    `saturating_cpu`). quantize_heads: first try plain int8 with the output heads quantized too (base
    "plain_heads"; otherwise, and after a miss, they stay fp32 as quantize_int8 keeps them).

    The search chooses on the build's validation set; the chosen graph is then checked on a held-out set of
    the same kind (HOLDOUT_ROUNDS of them at most). A graph that passes only the inputs it was chosen on
    would be a worst-row figure fitted to those inputs: when the held-out set misses, it joins the sets every
    candidate must pass and the search runs again."""
    import tempfile

    from vlexport.errors import ValidationError
    from vlexport.export.quantize import quantize_int8, saturating_cpu
    from vlexport.export.validate import memoized_outputs, validate_precision

    make_inputs = make_inputs or graph.make_inputs
    fp32_outputs = memoized_outputs(reference)  # every candidate meets the same validation inputs
    opt_cases = [_opt_sizes(axes, 10 ** 6)] * OPT_CASES
    opt_feeds = make_inputs(_opt_sizes(axes, 1), np.random.default_rng(7), True)
    last, checked, timed_ms = {}, {}, {}
    seeds = [0]  # the validation sets every candidate must pass: 0 the build's, then held-out ones that missed
    scratch = tempfile.TemporaryDirectory(prefix="vlexport-int8-")  # the per-token fp32 graph, while searching
    reduce_range = saturating_cpu() if reduce_range is None else reduce_range
    # plain int8 gets 7-bit weights where signed 8-bit ones saturate (x86 without VNNI, or --int8-portable), and
    # per-token graphs unsigned 8-bit ones (u8 x u8), since smoothing puts the channel outliers into the weight
    # rows and 7 bits lose them (measured on an AVX2-only EPYC, trained MiniLM VisualBERT: per-token's worst row
    # 0.925 with 7-bit weights, 0.983 with u8 ones, at 1.3x fp32's speed at batch 4)
    state = {"paths": {"plain": Path(fp32_path), "plain_heads": Path(fp32_path),
                       "per_token": Path(scratch.name) / "per_token.onnx"},
             "reduce_range": reduce_range, "quantize_heads": quantize_heads}

    def write(key):
        base, accurate, kept = key
        return quantize_int8(state["paths"][base], out_path, nodes_to_exclude=kept, accurate_nodes=accurate,
                             keep_weight_shapes=keep_weight_shapes, reduce_range=reduce_range,
                             unsigned_weights=base == "per_token" and reduce_range,
                             keep_output_layers=base != "plain_heads")

    def check(key, run, seed):
        """(passed, why, report) of candidate `key` on validation set `seed`, measured once."""
        if (key, seed) not in checked:
            try:
                rep = validate_precision(fp32_outputs, run, graph, axes, f"the int8 '{graph.name}' graph",
                                         n_samples=samples, seen=seen, make_inputs=make_inputs,
                                         extra_sizes=opt_cases, seed=seed, **gate)
                checked[key, seed] = (True, "", rep)
            except ValidationError as exc:
                checked[key, seed] = (False, str(exc).split(": ", 1)[-1], getattr(exc, "report", None))
        return checked[key, seed]

    def trial(base, accurate, kept):
        key = (base, tuple(accurate), tuple(kept))
        facts = write(key)
        run = runner(out_path)
        # every trial on the build's whole validation set (and the held-out sets that missed before): the
        # chosen trial's report is the gate's (screening on 30 samples first was tried: most candidates passed
        # it, and the search got slower)
        results = []
        for seed in seeds:
            results.append(check(key, run, seed))
            if not results[-1][0]:
                break
        passed, why, rep = results[-1][0], results[-1][1], results[0][2]
        last.update(key=key, facts=facts)
        if progress:
            progress()
        timed = key[0] != "plain" or key[1:] != ((), ()) or not passed  # a plain graph that passes: no trade-off
        if timed and key not in timed_ms:
            # fp32 beside each candidate: a loaded machine drifts
            timed_ms[key] = (_ms_per_call(run, opt_feeds), _ms_per_call(reference, opt_feeds))
        ms, fp32_ms = timed_ms.get(key, (None, None))
        return {"passed": passed, "base": base, "accurate_int8": len(accurate), "fp32": len(kept),
                "failed": why or None, "min_cosine": rep["min_cosine"] if rep else None,
                "top1": rep["top1_agreement"] if rep else None, "validation_sets": len(results),
                "ms_at_opt_b1": ms, "fp32_ms_at_opt_b1": fp32_ms}

    fallback, trials, holdout = None, [], []
    with scratch:
        for round_ in range(HOLDOUT_ROUNDS + 1):
            chosen, fallback, tried = _search_round(trial, graph.name, axes, make_inputs, threads, note, state)
            trials += tried
            key = (chosen[0], tuple(chosen[1]), tuple(chosen[2]))
            if round_ == HOLDOUT_ROUNDS:  # chosen on every held-out set so far; none left to check it on
                note(f"the int8 graph passes the build's and {len(seeds) - 1} held-out validation sets; no fresh "
                     f"set is left to check it on")
                break
            if last["key"] != key:  # a failing trial came last: write the chosen graph again
                last.update(key=key, facts=write(key))
            seed = round_ + 1
            passed, why, rep = check(key, runner(out_path), seed)
            holdout.append({"seed": seed, "passed": passed, "min_cosine": rep["min_cosine"] if rep else None,
                            "top1": rep["top1_agreement"] if rep else None, "failed": why or None})
            if passed:
                break
            note(f"the chosen int8 graph misses the gate on held-out inputs ({why}); searching again, with them "
                 f"added to the inputs every candidate must pass")
            seeds.append(seed)
        # a failing trial came last (the final round has no held-out check): write the chosen graph again
        facts = write(key) if last["key"] != key else last["facts"]
    base, chosen_accurate, chosen_fp32 = chosen
    run, rep = runner(out_path), checked[key, 0][2]
    rep["held_out"] = holdout
    if make_inputs is not graph.make_inputs:  # random token ids: a stress case, reported
        stress = validate_precision(reference, run, graph, axes, f"the int8 '{graph.name}' graph (random inputs)",
                                    n_samples=STRESS_SAMPLES, seen=seen, min_cosine=-1.0, min_top1=None,
                                    min_top5=None)
        rep["stress_random_inputs"] = {k: stress[k] for k in ("cases", "min_cosine", "top1_agreement", "nonfinite")}
    ranked = state.get(base) or []
    why = {r["name"]: r for r in ranked}
    facts["activations"] = "per-token, smoothed (vlexport.export.per_token)" if base == "per_token" else "per call"
    if base == "per_token":
        facts["per_token"] = state["per_token_facts"]
    facts["search"] = {
        "rule": (("plain dynamic int8 with the output heads quantized too; else " if quantize_heads else "")
                 + "plain dynamic int8; else per-token activation scales with the fewest most-sensitive MatMuls "
                 "(simulated int8 output error on calibration inputs) kept fp32; else the fewest moved to the "
                 "accurate block-wise int8 kernel, else kept fp32, until the gate passes"),
        "base": base,
        "fallback": fallback,
        "trials": trials,
        "held_out": holdout,
        "nodes": [{"name": n, "as": "accurate_int8" if n in chosen_accurate else "fp32",
                   "rel_error": round(why[n]["rel_error"], 5), "outlier_ratio": round(why[n]["outlier_ratio"], 1)}
                  for n in chosen_accurate + chosen_fp32],
        "sensitivity_top": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
                            for r in ranked[:10]],
    }
    return facts, rep
