"""Validation: graphs against the PyTorch reference, and reduced precisions (fp16, int8, TensorRT)
against the fp32 graph, over the whole built range of every axis. Outside tolerance a build fails
and nothing is written; the figures go to the manifest.

What is compared where (a graph's axes come from its description, e.g. batch/text/visual):
- fp32 vs PyTorch: `shape_grid` - >= 6 cases none equal to the traced sizes: the smallest input,
  every length axis at its max, the largest batch, opt and mid sizes, padded and unpadded. Every
  element within atol + rtol * |ref|.
- fp16 / int8 / TensorRT vs fp32: `n_samples` random inputs whose sizes are drawn log-uniformly over
  each axis' whole range (so short and long inputs both occur), plus the whole shape grid, plus any
  extra shapes (every TensorRT profile's min/opt/max). Gated on no NaN/inf, the worst per-row cosine
  (a row: one vector along the last axis, see vlexport.metrics) and top-1 agreement of every output
  the description marks as class scores.

torch-free except `torch_reference`, so `vlexport validate` runs where only the runtime is installed.
"""

from __future__ import annotations

import math

import numpy as np

from vlexport import metrics
from vlexport.errors import ValidationError


# ----------------------------------------------------------------------------- shapes

def _snap(r, n) -> int:
    n = max(r.min, min(int(n), r.max))
    return n - (n % r.step) if r.step > 1 else n


def shape_grid(axes: dict, seen: dict | None = None) -> list[tuple[dict, bool]]:
    """(sizes, padded) cases over `axes` ({name: AxisRange}), none equal to the traced `seen`."""
    lengths = [a for a in axes if a != "batch"]
    b = axes.get("batch")

    def at(batch, where, **fixed):
        sizes = {"batch": _snap(b, batch)} if b is not None else {}
        for name in lengths:
            r = axes[name]
            value = fixed.get(name, {"min": r.min, "max": r.max, "opt": r.opt, "mid": (r.min + r.max) // 2}[where])
            sizes[name] = _snap(r, value)
        return sizes

    b_max = b.max if b is not None else 1
    grid = [
        (at(1, "min"), False),         # the smallest input in range
        (at(1, "max"), True),          # every length at its max, padded
        (at(3, "opt"), True),          # the tuned shape, batch > 1
        (at(b_max, "min"), True),      # the largest batch, short inputs
        (at(4, "mid"), True),
        (at(2, "mid"), False),
    ]
    for i, name in enumerate(lengths):  # each length alone at its max and at its min
        r = axes[name]
        grid.append((at(2, "opt", **{name: r.max}), i % 2 == 0))
        grid.append((at(5, "opt", **{name: r.min}), i % 2 == 1))
    out, keys = [], set()
    for sizes, pad in grid:
        key = (tuple(sorted(sizes.items())), pad)
        if sizes != (seen or {}) and key not in keys:
            keys.add(key)
            out.append((sizes, pad))
    return out


def random_sizes(axes: dict, rng, batch: int) -> dict:
    """One draw: each length log-uniform over its whole range (snapped to its step); batch as given."""
    sizes = {}
    for name, r in axes.items():
        if name == "batch":
            sizes[name] = _snap(r, batch)
        else:
            value = math.exp(rng.uniform(math.log(r.min), math.log(r.max + 1)))
            sizes[name] = _snap(r, value)
    return sizes


# ----------------------------------------------------------------------------- gates

def int8_gate(weights: str) -> dict:
    """int8 thresholds. Trained checkpoints: top-1 agreement >= 98% and worst-row cosine >= 0.99.
    Random or tiny weights give near-tied logits (VQA: mean top-2 gap ~0.08 over 3129 labels, the size
    of int8's error), so top-1 there measures the tie, not the quantization: gate on worst-row cosine
    >= 0.99 and the fp32 answer being in int8's top 5 >= 98%, and report top-1."""
    if weights == "checkpoint":
        return {"min_cosine": 0.99, "min_top1": 0.98, "min_top5": None}
    return {"min_cosine": 0.99, "min_top1": None, "min_top5": 0.98}


def int4_gate(weights: str, min_cosine: float = 0.99) -> dict:
    """int4 weight-only thresholds against fp32: int8's for trained checkpoints; on random or tiny weights
    nothing is gated (their quantization error says nothing about a trained model's): reported only."""
    if weights == "checkpoint":
        return {**int8_gate(weights), "min_cosine": min_cosine}
    return {"min_cosine": -1.0, "min_top1": None, "min_top5": None}


# ----------------------------------------------------------------------------- runs

def torch_reference(module):
    """A callable numpy feeds -> numpy outputs for a PyTorch module (the graph's reference). Its
    `float64()` gives the same module run in float64 (a copy, made on first use): the yardstick for
    PyTorch fp32's own rounding noise, which on deep trained models exceeds a fixed atol."""
    import torch

    def run(feeds):
        with torch.no_grad():
            out = module(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in out.items() if v is not None}

    def float64():
        import copy

        wide = copy.deepcopy(module).double()

        def run64(feeds):
            with torch.no_grad():
                out = wide(**{k: torch.from_numpy(np.ascontiguousarray(v, np.float64 if v.dtype == np.float32
                                                                        else v.dtype)) for k, v in feeds.items()})
            return {k: v.numpy() for k, v in out.items() if v is not None}

        return run64

    run.float64 = float64
    return run


def _outputs(graph):
    return {o.name: o for o in graph.outputs}


def validate_graph(reference, candidate, graph, axes: dict, seen: dict, atol: float | None = None,
                   progress=None) -> dict:
    """fp32 graph vs the PyTorch reference on the shape grid; ValidationError past tolerance."""
    atol = graph.tolerance if atol is None else atol
    rng = np.random.default_rng(1234)
    cases, worst = [], {}
    for sizes, pad in shape_grid(axes, seen):
        feeds = graph.make_inputs(sizes, rng, pad=pad)
        ref, got = reference(feeds), candidate(feeds)
        case = {"sizes": sizes, "padded": pad, "outputs": {}, "_feeds": feeds}
        for name, o in _outputs(graph).items():
            p = metrics.parity(ref[name], got[name], o.classes, o.masked_below, o.row_axes)
            p["ok"] = metrics.allclose(ref[name], got[name], atol, masked_below=o.masked_below) and p["finite"]
            case["outputs"][name] = {k: p[k] for k in ("max_abs_err", "max_rel_err", "cosine_min", "finite", "ok")}
            w = worst.setdefault(name, {"max_abs_err": 0.0, "max_rel_err": 0.0, "cosine_min": 1.0})
            w["max_abs_err"] = max(w["max_abs_err"], p["max_abs_err"])
            w["max_rel_err"] = max(w["max_rel_err"], p["max_rel_err"])
            w["cosine_min"] = min(w["cosine_min"], p["cosine_min"])
        cases.append(case)
        if progress:
            progress()
    report = {"tolerance": {"atol": atol, "rtol": 1e-4}, "shapes": len(cases), "worst": worst, "cases": cases}
    missed = [c for c in cases if not all(o["ok"] for o in c["outputs"].values())]
    if missed and hasattr(reference, "float64"):
        report["noise_floor"] = _noise_floor_check(reference, candidate, graph, missed, atol)
    bad = [(c["sizes"], n, o["max_abs_err"]) for c in cases for n, o in c["outputs"].items() if not o["ok"]]
    report["passed"] = not bad
    for c in cases:
        c.pop("_feeds")
    if bad:
        sizes, name, err = bad[0]
        raise ValidationError(f"'{name}' differs from the reference by {err:.3g} (atol {atol}) at {sizes} "
                              f"({len(bad)} failing case(s)){noise_note(report)}; the graph is not written")
    return report


# the graph may sit this many times PyTorch fp32's own distance from float64 (plus atol): two fp32
# programs summing in different orders land about equally far from the exact result
NOISE_FACTOR = 2.0


def _noise_floor_check(reference, candidate, graph, missed: list, atol: float) -> dict:
    """Cases past atol re-judged against float64. Deep trained models (a 30-layer Llama: residual streams
    in the hundreds, keys and values up to ~20) carry fp32 rounding noise of ~1e-3 that no exporter can
    remove; a wrong graph is off by far more. Errors are taken relative to each output's largest value,
    and the noise level is the case's: PyTorch fp32's worst relative distance from float64 over all the
    outputs (one computation, one noise level; per output the maximum of a few noisy elements is itself
    too noisy to compare). An output passes when the graph's relative distance from float64 is within
    NOISE_FACTOR x that level (+ atol)."""
    try:
        wide = reference.float64()
    except Exception as exc:  # a module that cannot run in float64: the atol verdict stands
        return {"checked": 0, "error": f"{type(exc).__name__}: {exc}"}
    worst = {"graph_rel": 0.0, "torch_fp32_rel": 0.0, "output": None}
    for c in missed:
        feeds = c["_feeds"]
        exact, ref, got = wide(feeds), reference(feeds), candidate(feeds)

        def rel(x, name):
            scale = max(float(np.abs(exact[name]).max()), 1e-30)
            return float(np.abs(x[name].astype(np.float64) - exact[name]).max()) / scale, scale

        noise = max(rel(ref, name)[0] for name in c["outputs"])
        for name, o in c["outputs"].items():
            if o["ok"] or not o["finite"]:
                continue
            ours, scale = rel(got, name)
            o["rel_vs_float64"], o["case_noise_rel"] = ours, noise
            o["ok"] = ours <= NOISE_FACTOR * noise + atol / scale
            if ours / max(noise, 1e-30) > worst["graph_rel"] / max(worst["torch_fp32_rel"], 1e-30):
                worst = {"graph_rel": ours, "torch_fp32_rel": noise, "output": name}
    return {"checked": len(missed), "factor": NOISE_FACTOR, "worst": worst}


def noise_note(report: dict) -> str:
    """'; ...' naming the worst output of the noise-floor check (for the build's note and the error), or ''."""
    floor = report.get("noise_floor") or {}
    w = floor.get("worst")
    if not w or not w["output"]:
        return ""
    return (f"; {floor['checked']} case(s) past atol judged against float64: the graph is {w['graph_rel']:.2e} off "
            f"(relative) on '{w['output']}' where PyTorch fp32 itself is {w['torch_fp32_rel']:.2e} (allowed "
            f"{floor['factor']}x + atol)")


def precision_cases(axes: dict, n_samples: int, seen: dict | None = None, extra_sizes=(), batch: int = 10,
                    seed: int = 4321) -> list[tuple[dict, bool]]:
    """The (sizes, padded) cases a reduced precision is gated on: random draws over the whole range
    (n_samples examples in all), the shape grid, and `extra_sizes` (e.g. TensorRT profile shapes)."""
    rng = np.random.default_rng(seed)
    cases, done = [], 0
    b = axes.get("batch")
    while done < n_samples:
        want = min(batch, n_samples - done)
        sizes = random_sizes(axes, rng, want)
        cases.append((sizes, True))
        done += sizes.get("batch", 1) if b is not None else 1
    cases += shape_grid(axes, seen)
    cases += [(dict(s), True) for s in extra_sizes]
    return cases


MEMO_BYTES = 1 << 30  # the most output bytes memoized_outputs keeps


def memoized_outputs(run, max_bytes: int = MEMO_BYTES):
    """`run` (feeds -> outputs) remembering its outputs by the feeds' bytes: a search validates every candidate on
    the same inputs, and the fp32 reference's outputs on them never change (measured on an AVX2 EPYC: a trained
    DINOv2 int8 search step 184 -> 147 s). Outputs are kept
    until they hold `max_bytes`; then the rest is run each time. Never for timing."""
    import hashlib

    cache, held = {}, [0]

    def call(feeds):
        h = hashlib.sha1()
        for name in sorted(feeds):
            x = np.ascontiguousarray(feeds[name])
            h.update(f"{name}:{x.dtype}:{x.shape}".encode())
            h.update(x.view(np.uint8).reshape(-1).data if x.size else b"")
        key = h.digest()
        if key in cache:
            return cache[key]
        out = run(feeds)
        size = sum(getattr(o, "nbytes", 0) for o in out.values())
        if held[0] + size <= max_bytes:
            cache[key], held[0] = out, held[0] + size
        return out

    return call


def validate_precision(reference, candidate, graph, axes: dict, label: str, n_samples: int = 100,
                       min_cosine: float = 0.999, min_top1: float | None = 0.99, min_top5: float | None = None,
                       seen: dict | None = None, extra_sizes=(), progress=None, make_inputs=None,
                       seed: int = 0) -> dict:
    """A reduced-precision graph (or engine) against the fp32 graph on `precision_cases`. A threshold
    of None is reported, not gated. Raises ValidationError naming every failed gate.
    make_inputs: (sizes, rng, pad) -> feeds; default the graph's random maker (e.g. the realistic one).
    seed: which set of draws (0: the build's validation set; others: held-out sets of the same kind)."""
    make_inputs = make_inputs or graph.make_inputs
    rng = np.random.default_rng(99 + 1000 * seed)
    cases = precision_cases(axes, n_samples, seen, extra_sizes, seed=4321 + 1000 * seed)
    outs = _outputs(graph)
    parts = {n: [] for n in outs}
    worst_case = {n: (2.0, None) for n in outs}
    nonfinite = []
    for sizes, pad in cases:
        feeds = make_inputs(sizes, rng, pad)
        ref, got = reference(feeds), candidate(feeds)
        for name, o in outs.items():
            p = metrics.parity(ref[name], got[name], o.classes, o.masked_below, o.row_axes)
            parts[name].append(p)
            if not p["finite"]:
                nonfinite.append((name, sizes))
            if p["cosine_min"] < worst_case[name][0]:
                worst_case[name] = (p["cosine_min"], sizes)
        if progress:
            progress()
    merged = {n: metrics.merge_parity(ps) for n, ps in parts.items()}
    report = {
        "samples": n_samples, "cases": len(cases),
        "largest": {k: max(s[k] for s, _ in cases) for k in axes},
        "outputs": {n: {k: v for k, v in m.items() if k != "n_rows"} | {"worst_at": worst_case[n][1]}
                    for n, m in merged.items()},
        "min_cosine": float(min(m["cosine_min"] for m in merged.values())),
        "top1_agreement": {n: m["top1"] for n, m in merged.items() if "top1" in m},
        "top5_agreement": {n: m["top5"] for n, m in merged.items() if "top5" in m},
        "nonfinite": len(nonfinite),
        "thresholds": {"min_cosine": min_cosine, "min_top1": min_top1, "min_top5": min_top5},
        "inputs": getattr(make_inputs, "kind", "random"), "seed": seed,
    }
    problems = []
    if nonfinite:
        problems.append(f"NaN/inf in '{nonfinite[0][0]}' at {nonfinite[0][1]}")
    for n, m in merged.items():
        if m["cosine_min"] < min_cosine:
            problems.append(f"worst per-row cosine of '{n}' {m['cosine_min']:.5f} < {min_cosine} "
                            f"(at {worst_case[n][1]})")
    for n, v in report["top1_agreement"].items():
        if min_top1 is not None and v < min_top1:
            problems.append(f"top-1 agreement of '{n}' {v:.3f} < {min_top1}")
    for n, v in report["top5_agreement"].items():
        if min_top5 is not None and v < min_top5:
            problems.append(f"top-5 agreement of '{n}' {v:.3f} < {min_top5}")
    report["passed"] = not problems
    if problems:
        error = ValidationError(f"{label} fails validation against fp32: " + "; ".join(problems))
        error.report = report  # the figures, for a caller that tries alternatives (int8 search)
        raise error
    return report


# small shapes for graphs validated against a slow reference (a 7B decoder whose numpy reference streams
# every weight per call): a few tokens, both with and without padding
STREAMED_CASES = ({"batch": 1, "text": 3, "past": 4, "images": 1}, {"batch": 2, "text": 2, "past": 3, "images": 1})


def validate_streamed(reference, candidate, graph, label: str, min_cosine: float = 0.99) -> dict:
    """A graph against a slow reference on STREAMED_CASES (padded): worst per-row cosine gated, max-abs error and
    top-1 agreement reported. Raises ValidationError when the cosine gate fails or an output is not finite."""
    rng = np.random.default_rng(99)
    outs = _outputs(graph)
    parts = {n: [] for n in outs}
    for sizes in STREAMED_CASES:
        feeds = graph.make_inputs(sizes, rng, pad=True)
        ref, got = reference(feeds), candidate(feeds)
        for name, o in outs.items():
            parts[name].append(metrics.parity(ref[name], got[name], o.classes, o.masked_below, o.row_axes))
    merged = {n: metrics.merge_parity(ps) for n, ps in parts.items()}
    report = {"cases": len(STREAMED_CASES), "samples": len(STREAMED_CASES), "largest": dict(STREAMED_CASES[0]),
              "outputs": {n: {k: v for k, v in m.items() if k != "n_rows"} for n, m in merged.items()},
              "min_cosine": float(min(m["cosine_min"] for m in merged.values())),
              "top1_agreement": {n: m["top1"] for n, m in merged.items() if "top1" in m},
              "thresholds": {"min_cosine": min_cosine}, "reference": "numpy (streamed weights)"}
    problems = [f"worst per-row cosine of '{n}' {m['cosine_min']:.5f} < {min_cosine}" for n, m in merged.items()
                if m["cosine_min"] < min_cosine]
    problems += [f"NaN/inf in '{n}'" for n, ps in parts.items() if not all(p["finite"] for p in ps)]
    report["passed"] = not problems
    if problems:
        exc = ValidationError(f"{label} fails validation against its reference: " + "; ".join(problems))
        exc.report = report  # the figures of a miss (a build that tries another form records them)
        raise exc
    return report
