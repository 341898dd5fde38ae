"""Parity metrics, shared by the build's validation, `vlexport validate` and the benchmarks.

Candidate `out` against reference `ref` (same shape), masked entries (at or below `masked_below`
in the reference) left out of every number:
- max_abs_err: max |out - ref|; mean_abs_err
- max_rel_err: max |out - ref| / max |ref| (relative to the reference's scale, so logits that
  cross zero do not blow it up)
- cosine: cosine similarity of the flattened tensors
- cosine_min: the worst row. A row is one vector along the last axis (one sample's class scores,
  one token's hidden state); rows whose reference is ~0 (norm below 1e-6 of the largest row's) are
  not ranked, since their direction is noise; an output of one score per sample ((B, 1)) is one row
- finite: no NaN/inf in `out`, and every masked entry is still masked
- top1: fraction of rows (last axis = classes) whose argmax agrees; top5: fraction whose reference
  argmax is in the candidate's top 5; top5_overlap: mean |top5(ref) & top5(out)| / 5
Plain numpy; no torch.
"""

from __future__ import annotations

import math

import numpy as np


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def cosine(a, b) -> float:
    a, b = _f64(a).ravel(), _f64(b).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def rows(x) -> np.ndarray:
    """(..., n) -> (rows, n); a 1-D or 0-D array is one row."""
    x = _f64(x)
    return x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)


def row_cosines(ref, out) -> np.ndarray:
    """Cosine per row (see the module docstring); degenerate rows come back as NaN."""
    r, o = rows(ref), rows(out)
    nr, no = np.linalg.norm(r, axis=1), np.linalg.norm(o, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (r * o).sum(1) / (nr * no)
    big = nr.max() if nr.size else 0.0
    cos[nr <= 1e-6 * big] = np.nan
    cos[(nr > 1e-6 * big) & (no == 0)] = 0.0
    return cos


def topk_agreement(ref, out, k: int = 1) -> float:
    """Fraction of rows whose reference argmax is among the candidate's top k (k=1: same argmax)."""
    r, o = rows(ref), rows(out)
    k = min(k, o.shape[-1])
    label = r.argmax(-1)
    top = np.argsort(-o, axis=-1, kind="stable")[:, :k]
    return float((top == label[:, None]).any(1).mean()) if len(label) else math.nan


def topk_overlap(ref, out, k: int = 5) -> float:
    """Mean fraction of the reference's top-k classes that are also in the candidate's top-k."""
    r, o = rows(ref), rows(out)
    k = min(k, o.shape[-1])
    tr = np.argsort(-r, axis=-1, kind="stable")[:, :k]
    to = np.argsort(-o, axis=-1, kind="stable")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(tr, to)])) if len(tr) else math.nan


def parity(ref, out, classes: bool = False, masked_below: float | None = None, row_axes: tuple | None = None) -> dict:
    """All parity metrics of one output against the reference (see the module docstring). row_axes: the
    axes that form one cosine row (default the last; a KV cache (batch, heads, tokens, head_dim) is scored
    per token over (1, 3), all its heads: one head's vector can be near zero, where a per-vector cosine
    measures only the absolute error)."""
    r, o = _f64(ref), _f64(out)
    if r.shape != o.shape:
        raise ValueError(f"output shape {o.shape} differs from the reference {r.shape}")
    if row_axes:
        keep = [a for a in range(r.ndim) if a not in row_axes]
        order = keep + list(row_axes)
        flat = (*[r.shape[a] for a in keep], int(np.prod([r.shape[a] for a in row_axes])))
        r, o = r.transpose(order).reshape(flat), o.transpose(order).reshape(flat)
    finite = bool(np.isfinite(o).all())
    if masked_below is not None:
        masked = r <= masked_below
        if masked.any() and not (o[masked] <= masked_below).all():
            finite = False  # a masked entry came back unmasked
        r, o = np.where(masked, 0.0, r), np.where(masked, 0.0, o)
    diff = np.abs(o - r)
    scale = float(np.abs(r).max()) if r.size else 0.0
    # one score per sample (a (B, 1) retrieval score): a row of one number has no direction, so its
    # "row" is the whole column of scores
    cos_rows = (row_cosines(r.reshape(1, -1), o.reshape(1, -1)) if r.ndim and r.shape[-1] == 1 else
                row_cosines(r, o)) if r.size else np.array([1.0])
    ranked = cos_rows[~np.isnan(cos_rows)]
    res = {
        "max_abs_err": float(diff.max()) if diff.size else 0.0,
        "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
        "max_rel_err": (float(diff.max() / scale) if scale > 0 else
                        (0.0 if not diff.size or diff.max() == 0 else math.inf)),
        "cosine": cosine(r, o),
        "cosine_min": float(ranked.min()) if ranked.size else 1.0,
        "finite": finite,
        "n_rows": int(rows(r).shape[0]) if r.size else 0,
    }
    if not finite:
        res["cosine_min"] = 0.0 if not ranked.size or math.isnan(res["cosine_min"]) else min(res["cosine_min"], 0.0)
    if classes and r.ndim >= 1 and r.shape[-1] > 1 and r.size:
        keep = np.ones(rows(r).shape[0], bool)
        if masked_below is not None:
            keep = ~(rows(_f64(ref)) <= masked_below).all(1)  # rows that are entirely masked rank nothing
        rr, oo = rows(_f64(ref))[keep], rows(_f64(out))[keep]
        if masked_below is not None:
            oo = np.where(rr <= masked_below, -np.inf, oo)
        res["top1"] = topk_agreement(rr, oo, 1)
        res["top5"] = topk_agreement(rr, oo, 5)
        res["top5_overlap"] = topk_overlap(rr, oo, 5)
        res["n_class_rows"] = int(keep.sum())
    return res


def merge_parity(parts: list[dict]) -> dict:
    """Combine parity dicts computed on separate chunks: max of errors, min of cosine_min, row-weighted
    means of agreements and cosines."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    n = np.array([p.get("n_rows", 1) for p in parts], dtype=np.float64)
    out = {"n_rows": int(n.sum())}
    for key in ("max_abs_err", "max_rel_err"):
        out[key] = float(max(p[key] for p in parts))
    out["cosine_min"] = float(min(p["cosine_min"] for p in parts))
    out["finite"] = all(p["finite"] for p in parts)
    for key in ("mean_abs_err", "cosine"):
        out[key] = float(np.sum(n * np.array([p[key] for p in parts])) / n.sum())
    ranked = [p for p in parts if "top1" in p]  # a chunk with one class per row ranks nothing
    if ranked:
        nc = np.array([p.get("n_class_rows", p.get("n_rows", 1)) for p in ranked], dtype=np.float64)
        out["n_class_rows"] = int(nc.sum())
        for key in ("top1", "top5", "top5_overlap"):
            vals = np.array([p[key] for p in ranked])
            ok = ~np.isnan(vals) & (nc > 0)
            out[key] = float(np.sum(nc[ok] * vals[ok]) / nc[ok].sum()) if ok.any() else math.nan
    return out


def allclose(ref, test, atol: float, rtol: float = 1e-4, masked_below: float | None = None) -> bool:
    """Elementwise |test - ref| <= atol + rtol * |ref| everywhere (masked entries: both masked)."""
    ref, test = _f64(ref), _f64(test)
    if ref.shape != test.shape:
        return False
    keep = np.ones(ref.shape, bool) if masked_below is None else ref > masked_below
    if masked_below is not None and not (test[~keep] <= masked_below).all():
        return False
    return bool(np.all(np.abs(ref - test)[keep] <= atol + rtol * np.abs(ref)[keep]))
