"""Accuracy-aware int4 for the graphs a model writes itself (a Llama decoder): weight-only int4 MatMulNBits,
with the fewest projections moved to wider weights that let the graph meet its gate against fp32.

    plain int4 passes the gate          -> kept as it is
    it misses                           -> every fused projection (q/k/v, o, gate/up, down, lm_head) ranked
                                           by its simulated error as the int4 kernel runs it, then two tiers:
      1. 8-bit weights                     the top k moved to 8 bits (still MatMulNBits, int8 activations),
                                           k searched (0, 1, 2, 4, ... then bisected); skipped when even all
                                           of them at 8 bits miss (checked first: one trial)
      2. fp32                              the top k kept as plain fp32 MatMuls, the rest int4, k up to
                                           half of them (MAX_FP32_SHARE): a graph mostly in fp32 is not an
                                           int4 graph, and would only look like one in the manifest
    nothing passes                      -> int4 is refused for that graph: the build says why and goes on
                                           without it, the manifest records the trials

Why two tiers: with accuracy_level 4 (what makes MatMulNBits fast on CPU) the kernel quantizes its
*activations* to int8 per block of 32, so 8-bit weights cannot fix a projection whose input has outlier
channels; SmolLM2-135M's layer-3 keys reach only cosine 0.97 with every projection at 8 bits. An 8-bit
kernel with fp32 activations (accuracy_level 0) would, but it measured 35x slower than int4 at M=1 on ORT
1.32 (1.19 vs 0.032 ms for 576x1536), slower than the fp32 MatMul it would replace.

The simulated error of a projection: ||Xq Wq^T - X W^T|| / ||X W^T||, X its input rows captured from the fp32
graph on realistic inputs, Xq those rows rounded to int8 per block of 32 along K (symmetric, as the kernel
does), Wq its int4 weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlexport.errors import ValidationError

MAX_ROWS = 512  # activation rows per projection for the simulated error (spread over the inputs)
BLOCK = 32  # the writer's MatMulNBits block size (weights) and the kernel's activation block
TIERS = ("8-bit weights", "fp32")
MAX_FP32_SHARE = 0.5  # of the projections (fused groups) the fp32 tier may keep


def int8_blocks(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """x (rows, K) rounded to symmetric int8 per block of `block` along K and back (MatMulNBits'
    accuracy_level 4 activations)."""
    rows, K = x.shape
    pad = (-K) % block
    xb = np.pad(x, ((0, 0), (0, pad))).reshape(rows, -1, block)
    scale = np.abs(xb).max(axis=-1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return (np.round(xb / scale) * scale).reshape(rows, -1)[:, :K]


def simulated_errors(fp32_path: Path, groups: list, weights, feeds_list, threads: int | None = None) -> dict:
    """{group name: relative output error of its int4 MatMulNBits (int4 weights, int8 activations) on the
    captured inputs}."""
    import onnx

    from vlexport.export.int8_search import capture_inputs
    from vlexport.towers.llama_numpy import dequantize_nbits, quantize_nbits

    model = onnx.load(str(fp32_path))
    by_weight = {n.input[1]: n for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2}
    nodes = [{"name": g, "input": by_weight[g + ".weight"].input[0]} for g, _ in groups if g + ".weight" in by_weight]
    acts = capture_inputs(model, nodes, feeds_list, threads)
    out = {}
    rng = np.random.default_rng(0)
    for name, keys in groups:
        if name not in acts:
            continue
        x = np.concatenate([a.reshape(-1, a.shape[-1]) for a in acts[name]])
        if len(x) > MAX_ROWS:
            x = x[rng.choice(len(x), MAX_ROWS, replace=False)]
        w = np.concatenate([np.asarray(weights(k), np.float32) for k in keys])  # (N, K)
        wq = dequantize_nbits(*quantize_nbits(w, 4, BLOCK, False), w.shape[1], 4)
        exact = x @ w.T
        out[name] = float(np.linalg.norm(int8_blocks(x) @ wq.T - exact) / max(np.linalg.norm(exact), 1e-30))
        del acts[name]
    return out


def quantize_int4_gated(module, fp32_path: Path, out_path: Path, validate, feeds_list, *, threads=None,
                        note=print) -> tuple[dict, dict | None, dict]:
    """(writer facts of the graph left at out_path, the passing validation report or None, search facts).

    module: write_onnx(path, quant="int4", eight_bit=, fp32=) and projections(), weights();
    validate(path) -> report; raises ValidationError when the graph at `path` misses the gate. feeds_list:
    realistic inputs for the simulated errors. When nothing passes, out_path is removed (with its data
    file) and the report is None. search facts: ranked, trials, eight_bit / fp32 (the projections moved,
    [{name, member, rel_error, as}]), refused (why, when nothing passed)."""
    from vlexport.export.int8_search import search

    tried = {}

    def trial(eight: tuple, wide: tuple) -> dict:
        facts = module.write_onnx(out_path, quant="int4", eight_bit=eight, fp32=wide)
        try:
            rep = validate(out_path)
            result = {"passed": True, "report": rep, "why": ""}
        except ValidationError as exc:
            result = {"passed": False, "report": getattr(exc, "report", None), "why": str(exc).split(": ", 1)[-1]}
        tried[(eight, wide)] = (facts, result)
        return result

    first = trial((), ())
    info = {"ranked": [], "trials": [_row("int4", 0, first)], "eight_bit": [], "fp32": []}
    if first["passed"]:
        return tried[((), ())][0], first["report"], info
    note(f"plain int4 misses the gate ({first['why'][:160]}); ranking projections to move to wider weights")
    groups = module.projections()
    errors = simulated_errors(fp32_path, groups, module.weights(), feeds_list, threads)
    ranked = sorted(errors, key=errors.get, reverse=True)
    info["ranked"] = [{"name": n, "rel_error": round(errors[n], 5)} for n in ranked]
    members = {name: keys[0][:-len(".weight")] for name, keys in groups}  # the writer takes a member's name
    n = len(ranked)

    def split(tier: str, k: int) -> tuple:
        top = tuple(members[g] for g in ranked[:k])
        return (top, ()) if tier == TIERS[0] else ((), top)

    for tier in TIERS:
        def try_k(k, tier=tier):
            return trial(*split(tier, k))

        if tier == TIERS[0]:
            everything = try_k(n)  # if all of them at 8 bits miss, no fewer pass: one trial decides
            info["trials"].append(_row(tier, n, everything))
            if not everything["passed"]:
                note(f"all {n} projections at 8 bits still miss ({everything['why'][:120]}); keeping the worst "
                     "in fp32 instead")
                continue
            known = {0: first, n: everything}
            n_max = n
        else:
            known, n_max = {0: first}, int(n * MAX_FP32_SHARE)
        k, trials = search(ranked, try_k, n_max=n_max, known=known)
        info["trials"] += [_row(tier, t["k"], t) for t in trials]
        if k is None:
            continue
        chosen = split(tier, k)
        if (trials[-1]["k"] if trials else None) != k:  # the file on disk is the last trial's: write it again
            module.write_onnx(out_path, quant="int4", eight_bit=chosen[0], fp32=chosen[1])
        key = "eight_bit" if tier == TIERS[0] else "fp32"
        info[key] = [{"name": g, "member": members[g], "rel_error": round(errors[g], 5), "as": tier}
                     for g in ranked[:k]]
        facts, result = tried[chosen]
        return facts, result["report"], info
    for p in (out_path, Path(str(out_path) + ".data")):
        p.unlink(missing_ok=True)
    best = max(info["trials"], key=lambda t: t["min_cosine"] or -1.0)
    info["refused"] = (f"int4 misses the gate with all {n} projections at 8 bits and with up to {int(n * MAX_FP32_SHARE)} "
                       f"of them kept fp32 (best trial: {best['tier']}, {best['eight_bit'] + best['fp32']} moved: "
                       f"{best['why'][:200]})")
    return {}, None, info


def _row(tier: str, k: int, result) -> dict:
    rep = result.get("report") or {}
    return {"tier": tier, "eight_bit": k if tier == TIERS[0] else 0, "fp32": k if tier == TIERS[1] else 0,
            "passed": result["passed"], "min_cosine": rep.get("min_cosine"), "top1": rep.get("top1_agreement"),
            "why": result["why"][:200]}
