"""Statistics for the benchmark harness: latency percentiles, throughput, FLOPs and parity metrics.

Plain numpy; no torch. Every function is small enough to check by hand (see tests/test_bench.py).

Parity metric definitions (candidate `out` against reference `ref`, same shape):
- max_abs_err: max |out - ref|
- max_rel_err: max |out - ref| / max |ref|  (relative to the reference's scale, so logits that
  cross zero do not blow it up)
- cosine: cosine similarity of the flattened tensors; cosine_min: the worst row (per sample)
- top1: fraction of rows (last axis = classes) whose argmax agrees
- top5: fraction of rows whose reference argmax lies in the candidate's top 5 (top-5 accuracy
  with the reference's answer as the label); top5_overlap: mean |top5(ref) & top5(out)| / 5
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


# ----------------------------------------------------------------------------------------- latency
def percentiles(samples: Sequence[float], qs: Iterable[float] = PERCENTILES) -> dict[str, float]:
    """{"p50": ..., "p90": ..., "p99": ...} with numpy's linear interpolation between samples."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {f"p{q:g}": math.nan for q in qs}
    return {f"p{q:g}": float(np.percentile(a, q)) for q in qs}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Latency samples (seconds) -> milliseconds: p50/p90/p99, mean, std, min, max, n."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    out = {k + "_ms": v for k, v in percentiles(ms).items()}
    if ms.size:
        out.update(mean_ms=float(ms.mean()), std_ms=float(ms.std()), min_ms=float(ms.min()),
                   max_ms=float(ms.max()))
    out["n"] = int(ms.size)
    return out


def throughput(batch: int, latency_s: float) -> float:
    """Samples per second at `batch` samples per call taking `latency_s` seconds."""
    return batch / latency_s if latency_s > 0 else math.nan


def gflops_per_s(flops: float, latency_s: float) -> float:
    return flops / latency_s / 1e9 if latency_s > 0 else math.nan


# ------------------------------------------------------------------------------------------ FLOPs
def visualbert_macs(config, architecture: str, sizes: dict) -> int:
    """Multiply-accumulates of one VisualBERT forward pass: every Linear and attention matmul.

    `config` is a VisualBertConfig or its dict; `sizes` has batch, text, visual (and choices or
    phrases where the head has them). Elementwise ops, softmax and LayerNorm are not counted
    (the usual convention; they are < 1% of the work at these sizes). FLOPs = 2 * MACs.
    """
    get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    H, I, L = get("hidden_size", 768), get("intermediate_size", 3072), get("num_hidden_layers", 12)
    Dv = get("visual_embedding_dim", 512)
    labels = get("num_labels", None)
    id2label = get("id2label", None)
    if id2label:
        labels = len(id2label)
    labels = labels or 2
    B, T, V = int(sizes["batch"]), int(sizes["text"]), int(sizes["visual"])
    if architecture.endswith("MultipleChoice"):
        B *= int(sizes.get("choices", 1))
    S = T + V
    per_sample = V * Dv * H  # visual projection
    per_layer = 4 * S * H * H + 2 * S * H * I + 2 * S * S * H  # q,k,v,out + FFN + QK^T and AV
    per_sample += L * per_layer
    pooler = H * H
    if architecture.endswith("QuestionAnswering"):
        per_sample += pooler + H * labels  # the base model computes the pooler even though QA ignores it
    elif architecture.endswith("VisualReasoning"):
        per_sample += pooler + H * labels
    elif architecture.endswith("MultipleChoice"):
        per_sample += pooler + H
    elif architecture.endswith("PreTraining"):
        per_sample += S * (H * H + H * get("vocab_size", 30522)) + pooler + 2 * H
    elif architecture.endswith("RegionToPhraseAlignment"):
        P = int(sizes.get("phrases", 1))
        per_sample += pooler + P * H * 64 + V * H * 64 + P * V * 64
    else:  # VisualBertModel
        per_sample += pooler
    return int(B * per_sample)


def visualbert_flops(config, architecture: str, sizes: dict) -> int:
    return 2 * visualbert_macs(config, architecture, sizes)


# ----------------------------------------------------------------------------------------- parity
def _as_f64(x):
    return np.asarray(x, dtype=np.float64)


def cosine(a, b) -> float:
    a, b = _as_f64(a).ravel(), _as_f64(b).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def row_cosines(a, b) -> np.ndarray:
    """Cosine per leading index (sample) over all remaining axes."""
    a, b = _as_f64(a), _as_f64(b)
    a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a[None]
    b = b.reshape(b.shape[0], -1) if b.ndim > 1 else b[None]
    return np.array([cosine(x, y) for x, y in zip(a, b)])


def _rows(x):
    x = _as_f64(x)
    return x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x[None]


def topk_agreement(ref, out, k: int = 1) -> float:
    """Fraction of rows whose reference argmax is among the candidate's top k (k=1: same argmax)."""
    r, o = _rows(ref), _rows(out)
    k = min(k, o.shape[-1])
    label = r.argmax(-1)
    top = np.argsort(-o, axis=-1, kind="stable")[:, :k]
    return float(np.mean([label[i] in top[i] for i in range(len(label))])) if len(label) else math.nan


def topk_overlap(ref, out, k: int = 5) -> float:
    """Mean fraction of the reference's top-k classes that are also in the candidate's top-k."""
    r, o = _rows(ref), _rows(out)
    k = min(k, o.shape[-1])
    tr = np.argsort(-r, axis=-1, kind="stable")[:, :k]
    to = np.argsort(-o, axis=-1, kind="stable")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(tr, to)])) if len(tr) else math.nan


def parity(ref, out, classes: bool = True) -> dict[str, float]:
    """All parity metrics of one output against the reference (see the module docstring)."""
    r, o = _as_f64(ref), _as_f64(out)
    if r.shape != o.shape:
        raise ValueError(f"parity: shapes differ, reference {r.shape} vs candidate {o.shape}")
    diff = np.abs(o - r)
    finite = bool(np.isfinite(o).all())
    scale = float(np.abs(r).max()) if r.size else 0.0
    res = {
        "max_abs_err": float(diff.max()) if diff.size else 0.0,
        "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
        "max_rel_err": float(diff.max() / scale) if scale > 0 else (0.0 if not diff.size or diff.max() == 0 else math.inf),
        "cosine": cosine(r, o),
        "cosine_min": float(row_cosines(r, o).min()) if r.size else 1.0,
        "finite": finite,
        "n_rows": int(_rows(r).shape[0]),
    }
    if classes and r.ndim >= 1 and r.shape[-1] > 1:
        res["top1"] = topk_agreement(r, o, 1)
        res["top5"] = topk_agreement(r, o, 5)
        res["top5_overlap"] = topk_overlap(r, o, 5)
    return res


def merge_parity(parts: list[dict]) -> dict:
    """Combine parity dicts computed on separate chunks: max of errors, row-weighted means of
    agreements and cosines, min of cosine_min."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    n = np.array([p.get("n_rows", 1) for p in parts], dtype=np.float64)
    out = {"n_rows": int(n.sum())}
    for key in ("max_abs_err", "max_rel_err"):
        out[key] = float(max(p[key] for p in parts))
    out["cosine_min"] = float(min(p["cosine_min"] for p in parts))
    out["finite"] = all(p["finite"] for p in parts)
    for key in ("mean_abs_err", "cosine", "top1", "top5", "top5_overlap"):
        if all(key in p for p in parts):
            out[key] = float(np.sum(n * np.array([p[key] for p in parts])) / n.sum())
    return out
