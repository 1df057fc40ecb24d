"""Latency statistics: percentiles, not means, are what a user can plan with."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["latency_summary", "PERCENTILE_METHOD"]

# numpy's default: linear interpolation between the two nearest ranks (Hyndman & Fan
# type 7, as in R and Excel's PERCENTILE.INC).
PERCENTILE_METHOD = "linear"


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """min/p50/p90/p99/mean/std/max of a latency series, in milliseconds."""
    if len(seconds) == 0:
        raise ValueError("no timings to summarise")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99], method=PERCENTILE_METHOD)
    return {
        "min": float(ms.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "std": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "max": float(ms.max()),
    }
