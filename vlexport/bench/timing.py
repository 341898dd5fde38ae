"""Timing statistics for the benchmark harness: latency percentiles, throughput, GFLOP/s.

Plain numpy; no torch. Parity metrics live in `vlexport.metrics` (shared with validation).
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
