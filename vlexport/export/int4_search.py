"""Accuracy-aware int4 for the graphs a model writes itself (a Llama decoder): weight-only MatMulNBits at the
fewest bits that let the graph meet its gate against fp32.

    plain int4 passes the gate          -> kept as it is
    it misses                           -> every fused projection (q/k/v, o, gate/up, down, lm_head) ranked
                                           by its simulated error as the kernel runs it, then three tiers,
                                           each tried at its widest first (one trial: if that misses, no
                                           fewer pass and the tier is skipped), then k searched (0, 1, 2,
                                           4, ... then bisected):
      1. int4, top k at 8 bits             (still MatMulNBits with int8 activations)
      2. int4, top k kept fp32             (plain MatMuls), k up to half of them (MAX_FP32_SHARE)
      3. all 8-bit, top k kept fp32        ranked by their simulated *8-bit* error, k up to half
    nothing passes                      -> int4 is refused for that graph: the build says why and goes on
                                           without it, the manifest records the trials

A graph mostly in fp32 is not a quantized graph (and would only look like one in the manifest), hence the
cap. Why fp32 and not an 8-bit kernel with fp32 activations: with accuracy_level 4 (what makes
MatMulNBits fast on CPU) the kernel quantizes its *activations* to int8 per block of 32, so 8-bit weights
cannot fix a projection whose input has outlier channels (SmolLM2-135M's layer-3 keys reach only cosine
0.97 with every projection at 8 bits); accuracy_level 0 would, but it measured 35x slower than int4 at
M=1 on ORT 1.32 (1.19 vs 0.032 ms for 576x1536), slower than the fp32 MatMul it would replace.

The simulated error of a projection at b bits: ||Xq Wb^T - X W^T|| / ||X W^T||, X its input rows captured
from the fp32 graph on realistic inputs, Xq those rows rounded to int8 per block of 32 along K (symmetric,
as the kernel does), Wb its b-bit weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlexport.errors import ValidationError

MAX_ROWS = 512  # activation rows per projection for the simulated error (spread over the inputs)
BLOCK = 32  # the writer's MatMulNBits block size (weights) and the kernel's activation block
TIERS = ("8-bit weights", "fp32", "8-bit + fp32")
MAX_FP32_SHARE = 0.5  # of the projections (fused groups) the fp32 tiers may keep


def int8_blocks(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """x (rows, K) rounded to symmetric int8 per block of `block` along K and back (MatMulNBits'
    accuracy_level 4 activations)."""
    rows, K = x.shape
    pad = (-K) % block
    xb = np.pad(x, ((0, 0), (0, pad))).reshape(rows, -1, block)
    scale = np.abs(xb).max(axis=-1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return (np.round(xb / scale) * scale).reshape(rows, -1)[:, :K]


def simulated_errors(fp32_path: Path, groups: list, weights, feeds_list, threads: int | None = None,
                     bits=(4,)) -> dict:
    """{bits: {group name: relative output error of its MatMulNBits (`bits` weights, int8 activations) on
    the captured inputs}} for each of `bits`."""
    import onnx

    from vlexport.export.int8_search import capture_inputs
    from vlexport.towers.llama_numpy import dequantize_nbits, quantize_nbits

    model = onnx.load(str(fp32_path))
    by_weight = {n.input[1]: n for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2}
    nodes = [{"name": g, "input": by_weight[g + ".weight"].input[0]} for g, _ in groups if g + ".weight" in by_weight]
    acts = capture_inputs(model, nodes, feeds_list, threads)
    out = {b: {} for b in bits}
    rng = np.random.default_rng(0)
    for name, keys in groups:
        if name not in acts:
            continue
        x = np.concatenate([a.reshape(-1, a.shape[-1]) for a in acts[name]])
        if len(x) > MAX_ROWS:
            x = x[rng.choice(len(x), MAX_ROWS, replace=False)]
        w = np.concatenate([np.asarray(weights(k), np.float32) for k in keys])  # (N, K)
        exact, xq = x @ w.T, int8_blocks(x)
        for b in bits:
            wq = dequantize_nbits(*quantize_nbits(w, b, BLOCK, False), w.shape[1], b)
            out[b][name] = float(np.linalg.norm(xq @ wq.T - exact) / max(np.linalg.norm(exact), 1e-30))
        del acts[name]
    return out


def quantize_int4_gated(module, fp32_path: Path, out_path: Path, validate, feeds_list, *, threads=None,
                        note=print) -> tuple[dict, dict | None, dict]:
    """(writer facts of the graph left at out_path, the passing validation report or None, search facts).

    module: write_onnx(path, quant="int4", eight_bit=, fp32=) and projections(), weights();
    validate(path) -> report; raises ValidationError when the graph at `path` misses the gate. feeds_list:
    realistic inputs for the simulated errors, or a callable making them (called only if plain int4 misses). When nothing passes, out_path is removed (with its data
    file) and the report is None. search facts: ranked, trials, eight_bit / fp32 (the projections moved,
    [{name, member, rel_error, as}]), refused (why, when nothing passed)."""
    from vlexport.export.int8_search import search

    tried = {}

    on_disk = []  # the configuration last written to out_path

    def trial(eight: tuple, wide: tuple) -> dict:
        if (eight, wide) in tried:  # tier 3's start (all 8-bit, none fp32) is tier 1's widest
            return tried[(eight, wide)][1]
        facts = module.write_onnx(out_path, quant="int4", eight_bit=eight, fp32=wide)
        on_disk[:] = [(eight, wide)]
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
    feeds = feeds_list() if callable(feeds_list) else feeds_list
    errors = simulated_errors(fp32_path, groups, module.weights(), feeds, threads, bits=(4, 8))
    ranked = {b: sorted(errors[b], key=errors[b].get, reverse=True) for b in (4, 8)}
    info["ranked"] = [{"name": g, "rel_error": round(errors[4][g], 5), "rel_error_8bit": round(errors[8][g], 5)}
                      for g in ranked[4]]
    members = {name: keys[0][:-len(".weight")] for name, keys in groups}  # the writer takes a member's name
    n = len(ranked[4])
    everything = tuple(members[g] for g in ranked[4])

    def split(tier: str, k: int) -> tuple:  # (eight_bit, fp32) members for the top k of the tier's ranking
        if tier == TIERS[0]:
            return tuple(members[g] for g in ranked[4][:k]), ()
        top = tuple(members[g] for g in (ranked[4] if tier == TIERS[1] else ranked[8])[:k])
        return (() if tier == TIERS[1] else everything), top

    for tier in TIERS:
        n_max = n if tier == TIERS[0] else int(n * MAX_FP32_SHARE)

        def try_k(k, tier=tier):
            return trial(*split(tier, k))

        widest = try_k(n_max)  # if the tier's widest graph misses, no fewer pass: one trial decides
        info["trials"].append(_row(tier, n_max, widest, n))
        if not widest["passed"]:
            note(f"{_label(tier, n_max, n)} still misses ({widest['why'][:120]})")
            continue
        start = trial(*split(tier, 0)) if tier == TIERS[2] else first  # all 8-bit, none fp32
        if tier == TIERS[2]:
            info["trials"].append(_row(tier, 0, start, n))
        k, trials = search(ranked[4], try_k, n_max=n_max, known={0: start, n_max: widest})
        info["trials"] += [_row(tier, t["k"], t, n) for t in trials]
        chosen = split(tier, k)
        if on_disk != [chosen]:  # the file on disk is the last trial's: write the chosen one again
            module.write_onnx(out_path, quant="int4", eight_bit=chosen[0], fp32=chosen[1])
        errs = {TIERS[0]: errors[4], TIERS[1]: errors[4], TIERS[2]: errors[8]}[tier]
        order = ranked[8] if tier == TIERS[2] else ranked[4]
        wide = [{"name": g, "member": members[g], "rel_error": round(errs[g], 5), "as": "fp32" if tier != TIERS[0]
                 else "8-bit weights"} for g in order[:k]]
        if tier == TIERS[0]:
            info["eight_bit"] = wide
        else:
            info["fp32"] = wide
            if tier == TIERS[2]:
                kept = {w["name"] for w in wide}
                info["eight_bit"] = [{"name": g, "member": members[g], "rel_error": round(errors[4][g], 5),
                                      "as": "8-bit weights"} for g in ranked[4] if g not in kept]
        facts, result = tried[chosen]
        return facts, result["report"], info
    for p in (out_path, Path(str(out_path) + ".data")):
        p.unlink(missing_ok=True)
    best = max(info["trials"], key=lambda t: t["min_cosine"] or -1.0)
    info["refused"] = (f"int4 misses the gate with all {n} projections at 8 bits and with up to {int(n * MAX_FP32_SHARE)} "
                       f"of them kept fp32 beside int4 or 8-bit weights (best trial: {best['eight_bit']} at 8 bits, "
                       f"{best['fp32']} fp32: {best['why'][:200]})")
    return {}, None, info


def _label(tier: str, k: int, n: int) -> str:
    return {TIERS[0]: f"int4 with {k} projections at 8 bits", TIERS[1]: f"int4 with {k} of {n} projections kept fp32",
            TIERS[2]: f"8-bit weights with {k} of {n} projections kept fp32"}[tier]


def _row(tier: str, k: int, result, n: int = 0) -> dict:
    rep = result.get("report") or {}
    eight = {TIERS[0]: k, TIERS[2]: n - k}.get(tier, 0)
    return {"tier": tier, "eight_bit": eight, "fp32": k if tier in TIERS[1:] else 0,
            "passed": result["passed"], "min_cosine": rep.get("min_cosine"), "top1": rep.get("top1_agreement"),
            "why": result["why"][:200]}
