"""Accuracy-aware int4 for the graphs a model writes itself (a Llama decoder): weight-only MatMulNBits at the
fewest bits that let the graph meet its gate against fp32.

    plain int4 at block 128 passes      -> kept as it is (the fast block: FAST_BLOCK)
    it misses                           -> plain int4 at block 32 (BLOCK), kept if it passes
    that misses too                     -> every fused projection (q/k/v, o, gate/up, down, lm_head) ranked
                                           by its simulated error as the kernel runs it, then three tiers,
                                           each tried at its widest first (one trial: if that misses, no
                                           fewer pass and the tier is skipped), then k searched (0, 1, 2,
                                           4, ... then bisected):
      1. int4, top k at 8 bits             (still MatMulNBits with int8 activations)
      2. int4, top k kept fp32             (plain MatMuls), k up to half of them (MAX_FP32_SHARE)
      3. all 8-bit, top k kept fp32        ranked by their simulated *8-bit* error, k up to half
      4. all 8-bit, top k kept fp32        ranked by how many of the outputs that all-8-bit misses they feed
                                           (found in the graph), the earliest first: error entering early
                                           is carried by every later layer, which a per-projection error
                                           does not see
    a graph chosen                      -> checked on a held-out validation set; if it misses there, that
                                           set joins the search's and it runs again (HOLDOUT_ROUNDS)
    nothing passes                      -> int4 is refused for that graph: the build says why and goes on
                                           without it, the manifest records the trials

A graph mostly in fp32 is not a quantized graph (and would only look like one in the manifest), hence the
cap. Why fp32 and not an 8-bit kernel with fp32 activations: with accuracy_level 4 (what makes
MatMulNBits fast on CPU) the kernel quantizes its *activations* to int8 per block of 32, so 8-bit weights
cannot fix a projection whose input has outlier channels (SmolLM2-135M's layer-3 keys reach only cosine
0.97 with every projection at 8 bits); accuracy_level 0 would, but it measured 35x slower than int4 at
M=1 on ORT 1.32 (1.19 vs 0.032 ms for 576x1536), slower than the fp32 MatMul it would replace.

Why two block sizes: at M=1 (a decode step) the kernel's time per block (a scale, a zero point, the
activations' int8 rounding) is what bounds it on a small CPU, not the weight bytes. A Llama-7B layer's
projections read at 74% of two cores' read bandwidth at block 32 and 83% at block 128, 26% less time per
call (benchmarks/results/2026-12-06-int4-block-size-cpu.md); the whole 7B decoder decodes 26% faster
(...-llama7b-int4-block128-cpu.md). Block 128 rounds weights and activations more coarsely, so the gate
decides, on a held-out set too: the finer block, and the search, only when the coarse one misses. The
tiers run at block 32, where 8-bit weights and fp32 projections have the most to mend.

The simulated error of a projection at b bits: ||Xq Wb^T - X W^T|| / ||X W^T||, X its input rows captured
from the fp32 graph on realistic inputs, Xq those rows rounded to int8 per block of 32 along K (symmetric,
as the kernel does), Wb its b-bit weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlexport.errors import ValidationError

MAX_ROWS = 512  # activation rows per projection for the simulated error (spread over the inputs)
BLOCK = 32  # MatMulNBits block size (weights, and the kernel's activation block) of the search's tiers
FAST_BLOCK = 128  # tried first, plain: faster at M=1, coarser
TIERS = ("8-bit weights", "fp32", "8-bit + fp32", "8-bit + upstream fp32")
MAX_FP32_SHARE = 0.5  # of the projections (fused groups) the fp32 tiers may keep
HOLDOUT_ROUNDS = 2  # held-out validation sets the chosen graph is checked on, at most


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
                     bits=(4,), block: int = BLOCK) -> dict:
    """{bits: {group name: relative output error of its MatMulNBits (`bits` weights, int8 activations, both
    per block of `block` along K) on the captured inputs}} for each of `bits`."""
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
        exact, xq = x @ w.T, int8_blocks(x, block)
        for b in bits:
            wq = dequantize_nbits(*quantize_nbits(w, b, block, False), w.shape[1], b)
            out[b][name] = float(np.linalg.norm(xq @ wq.T - exact) / max(np.linalg.norm(exact), 1e-30))
        del acts[name]
    return out


def quantize_int4_gated(module, fp32_path: Path, out_path: Path, validate, feeds_list, *, threads=None,
                        note=print, block: int = BLOCK, fast_block: int | None = FAST_BLOCK
                        ) -> tuple[dict, dict | None, dict]:
    """(writer facts of the graph left at out_path, the passing validation report or None, search facts).

    block: the MatMulNBits block size of the search; fast_block: a block size tried first, plain, and kept
    if it passes (None: only `block`, e.g. when the user pinned one). The facts' block_size says which.
    module: write_onnx(path, quant="int4", eight_bit=, fp32=, block_size=) and projections(), weights();
    validate(path, seed) -> report; raises ValidationError when the graph at `path` misses the gate on
    validation set `seed` (0 the build's, others held-out sets of the same kind). feeds_list: realistic
    inputs for the simulated errors, or a callable making them (called only if plain int4 misses). When
    nothing passes, out_path is removed (with its data file) and the report is None. search facts: ranked,
    trials, eight_bit / fp32 (the projections moved, [{name, member, rel_error, as}]), held_out, refused
    (why, when nothing passed).

    The search chooses on the build's validation set; the chosen graph is then checked on a held-out set
    (HOLDOUT_ROUNDS at most, as the int8 search does): top-1 agreement on a few dozen tokens is coarse, and
    the fewest projections that pass one set may pass it by luck. A held-out set that misses joins the sets
    every candidate must pass, and the search runs again."""
    tried, written, on_disk, seeds = {}, {}, [], [0]  # seeds: the validation sets every candidate must pass

    def check(eight: tuple, wide: tuple, seed: int, size: int = block) -> dict:
        key = (eight, wide, size)
        if (*key, seed) not in tried:
            if on_disk != [key]:  # written again only when another configuration came since
                written[key] = module.write_onnx(out_path, quant="int4", eight_bit=eight, fp32=wide, block_size=size)
                on_disk[:] = [key]
            try:
                tried[(*key, seed)] = {"passed": True, "report": validate(out_path, seed), "why": ""}
            except ValidationError as exc:
                tried[(*key, seed)] = {"passed": False, "report": getattr(exc, "report", None),
                                       "why": str(exc).split(": ", 1)[-1]}
        return tried[(*key, seed)]

    def trial(eight: tuple, wide: tuple) -> dict:  # on every required set: the first that misses, else the build's
        for i, seed in enumerate(seeds):
            result = check(eight, wide, seed)
            if not result["passed"]:
                return {**result, "validation_sets": i + 1, "block_size": block}
        return {**tried[eight, wide, block, 0], "validation_sets": len(seeds), "block_size": block}

    def held_out(eight: tuple, wide: tuple, seed: int, size: int = block) -> dict:  # a chosen graph, checked again
        held = check(eight, wide, seed, size)
        info["held_out"].append({"seed": seed, "passed": held["passed"], "why": held["why"][:200],
                                 "min_cosine": (held["report"] or {}).get("min_cosine"), "block_size": size})
        return held

    info = {"ranked": [], "trials": [], "eight_bit": [], "fp32": [], "held_out": []}
    if fast_block is not None and fast_block != block:
        fast = check((), (), 0, fast_block)
        info["trials"].append(_row("int4", 0, {**fast, "block_size": fast_block}))
        if fast["passed"]:  # and on a held-out set, as a searched choice is
            held = held_out((), (), 1, fast_block)
            if held["passed"]:
                return written[(), (), fast_block], fast["report"], info
            fast = held
        note(f"plain int4 at block {fast_block} misses the gate ({fast['why'][:120]}); trying block {block}")
    first = trial((), ())
    info["trials"].append(_row("int4", 0, first))
    if first["passed"]:
        return written[(), (), block], first["report"], info
    note(f"plain int4 misses the gate ({first['why'][:160]}); ranking projections to move to wider weights")
    groups = module.projections()
    feeds = feeds_list() if callable(feeds_list) else feeds_list
    errors = simulated_errors(fp32_path, groups, module.weights(), feeds, threads, bits=(4, 8), block=block)
    cones = upstream_groups(fp32_path, groups)
    ranked = {b: sorted(errors[b], key=errors[b].get, reverse=True) for b in (4, 8)}
    info["ranked"] = [{"name": g, "rel_error": round(errors[4][g], 5), "rel_error_8bit": round(errors[8][g], 5)}
                      for g in ranked[4]]
    members = {name: keys[0][:-len(".weight")] for name, keys in groups}  # the writer takes a member's name
    n = len(ranked[4])
    everything = tuple(members[g] for g in ranked[4])
    order = [g for g, _ in groups if g in errors[4]]  # graph order

    for round_ in range(HOLDOUT_ROUNDS + 1):
        found = _search_tiers(trial, info, ranked, members, everything, order, cones, note)
        if found is None:
            break
        tier, k, chosen, upstream = found
        if round_ == HOLDOUT_ROUNDS:
            note(f"the int4 graph passes the build's and {len(seeds) - 1} held-out validation sets; no fresh set "
                 f"is left to check it on")
            break
        seed = round_ + 1
        held = held_out(*chosen, seed)
        if held["passed"]:
            break
        note(f"the chosen int4 graph misses the gate on held-out inputs ({held['why'][:120]}); searching again, "
             f"with them added to the inputs every candidate must pass")
        seeds.append(seed)
    if found is None:
        for p in (out_path, Path(str(out_path) + ".data")):
            p.unlink(missing_ok=True)
        best = max(info["trials"], key=lambda t: t["min_cosine"] or -1.0)
        info["refused"] = (f"int4 misses the gate with all {n} projections at 8 bits and with up to "
                           f"{int(n * MAX_FP32_SHARE)} of them kept fp32 beside int4 or 8-bit weights, ranked by "
                           f"simulated error or upstream of the failing outputs (best trial: {best['eight_bit']} "
                           f"at 8 bits, {best['fp32']} fp32: {best['why'][:200]})")
        return {}, None, info
    if on_disk != [(*chosen, block)]:  # the file on disk is the last check's: write the chosen one again
        module.write_onnx(out_path, quant="int4", eight_bit=chosen[0], fp32=chosen[1], block_size=block)
    errs = errors[8] if tier in TIERS[2:] else errors[4]
    moved = {TIERS[0]: ranked[4], TIERS[1]: ranked[4], TIERS[2]: ranked[8]}.get(tier, upstream)[:k]
    wide = [{"name": g, "member": members[g], "rel_error": round(errs[g], 5),
             "as": "fp32" if tier != TIERS[0] else "8-bit weights"} for g in moved]
    if tier == TIERS[0]:
        info["eight_bit"] = wide
    else:
        info["fp32"] = wide
        if tier in TIERS[2:]:
            kept = set(moved)
            info["eight_bit"] = [{"name": g, "member": members[g], "rel_error": round(errors[4][g], 5),
                                  "as": "8-bit weights"} for g in ranked[4] if g not in kept]
    info["chosen_tier"] = tier
    return written[(*chosen, block)], tried[(*chosen, block, 0)]["report"], info


def _search_tiers(trial, info, ranked, members, everything, order, cones, note):
    """The first tier whose widest graph passes, and its fewest k: (tier, k, (eight_bit, fp32), the
    upstream ranking or None), or None when no tier passes. Appends every trial to info["trials"]."""
    from vlexport.export.int8_search import search

    n = len(ranked[4])
    upstream = None
    for tier in TIERS:
        n_max = n if tier == TIERS[0] else int(n * MAX_FP32_SHARE)
        if tier == TIERS[3]:
            rank, n_max, widest = _upstream_widest(trial, info, order, cones, members, everything, n_max, n)
            upstream = rank
        else:
            rank = ranked[8] if tier == TIERS[2] else ranked[4]

        def split(k: int, tier=tier, rank=rank) -> tuple:  # (eight_bit, fp32) members for the top k
            top = tuple(members[g] for g in rank[:k])
            return (top, ()) if tier == TIERS[0] else ((() if tier == TIERS[1] else everything), top)

        if tier != TIERS[3]:
            widest = trial(*split(n_max))  # if the tier's widest graph misses, no fewer pass: one trial decides
            info["trials"].append(_row(tier, n_max, widest, n))
        if not widest["passed"]:
            note(f"{_label(tier, n_max, n)} still misses ({widest['why'][:120]})")
            continue
        start = trial(*split(0))  # tiers 1-2: plain int4; 3-4: all 8-bit (memoized)
        if tier == TIERS[2]:
            info["trials"].append(_row(tier, 0, start, n))
        k, trials = search(rank, lambda k: trial(*split(k)), n_max=n_max, known={0: start, n_max: widest})
        info["trials"] += [_row(tier, t["k"], t, n) for t in trials]
        return tier, k, split(k), upstream
    return None


def _upstream_widest(trial, info, order, cones, members, everything, cap: int, n: int) -> tuple:
    """Tier 4's ranking, its widest k and that trial: upstream of the outputs all-8-bit misses, widened to the
    outputs each widest graph still misses (a graph that mends the cache may still miss the logits), until
    one passes or misses nothing new."""
    base = trial(everything, ())  # (memoized where tier 3 ran it)
    info["trials"].append(_row(TIERS[3], 0, base, n))
    failing = set(failing_outputs(base["report"], cones))
    while True:
        rank = upstream_ranking(order, cones, sorted(failing))
        k = min(cap, len(rank))
        widest = trial(everything, tuple(members[g] for g in rank[:k]))
        info["trials"].append(_row(TIERS[3], k, widest, n))
        new = set() if widest["passed"] else set(failing_outputs(widest["report"], cones)) - failing
        if not new:
            return rank, k, widest
        failing |= new


def upstream_groups(fp32_path: Path, groups: list) -> dict:
    """{graph output: the set of projection groups whose MatMul lies upstream of it} (a decoder's layer-3
    cache is fed by layers 0-2 and layer 3's qkv; its logits by every projection)."""
    import onnx

    model = onnx.load(str(fp32_path), load_external_data=False)
    bit = {g + ".weight": 1 << i for i, (g, _) in enumerate(groups)}
    above = {}  # tensor -> bitmask of the groups upstream; ONNX nodes come in topological order
    for node in model.graph.node:
        mask = 0
        for name in node.input:
            mask |= above.get(name, 0) | bit.get(name, 0)
        for name in node.output:
            above[name] = mask
    return {o.name: {g for i, (g, _) in enumerate(groups) if above.get(o.name, 0) >> i & 1}
            for o in model.graph.output}


def failing_outputs(report: dict | None, cones: dict) -> list:
    """The outputs a validation report says miss its thresholds (every output when it has no per-output
    figures, or saw NaN/inf)."""
    outs, limits = (report or {}).get("outputs"), (report or {}).get("thresholds", {})
    if not outs or report.get("nonfinite"):
        return list(cones)
    low = {n for n, m in outs.items() if m.get("cosine_min", 1.0) < limits.get("min_cosine", -1.0)}
    for key, limit in (("top1", "min_top1"), ("top5", "min_top5")):
        if limits.get(limit) is not None:
            low |= {n for n, m in outs.items() if key in m and m[key] < limits[limit]}
    return sorted(low) or list(cones)


def upstream_ranking(order: list, cones: dict, failing: list) -> list:
    """Projections by how many failing outputs they feed, the earliest in the graph first among equals:
    error that enters early is carried by every later layer (trained SmolLM2: every projection at 8 bits
    misses at layer 6's values; layers 0-2 kept fp32, 12 of 121 groups, pass, where the 60 largest simulated
    8-bit errors did not)."""
    fed = {g: sum(g in cones.get(o, ()) for o in failing) for g in order}
    return sorted((g for g in order if fed[g]), key=lambda g: (-fed[g], order.index(g)))


def _label(tier: str, k: int, n: int) -> str:
    return {TIERS[0]: f"int4 with {k} projections at 8 bits", TIERS[1]: f"int4 with {k} of {n} projections kept fp32",
            TIERS[2]: f"8-bit weights with {k} of {n} projections kept fp32",
            TIERS[3]: f"8-bit weights with {k} of {n} projections upstream of the failing outputs kept fp32"}[tier]


def _row(tier: str, k: int, result, n: int = 0) -> dict:
    rep = result.get("report") or {}
    eight = {TIERS[0]: k, TIERS[2]: n - k, TIERS[3]: n - k}.get(tier, 0)
    return {"tier": tier, "eight_bit": eight, "fp32": k if tier in TIERS[1:] else 0,
            "passed": result["passed"], "min_cosine": rep.get("min_cosine"), "top1": rep.get("top1_agreement"),
            "why": result["why"][:200], "validation_sets": result.get("validation_sets", 1),
            "block_size": result.get("block_size")}
