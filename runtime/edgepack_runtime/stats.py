"""Latency statistics: percentiles, not means, are what a user can plan with."""

from __future__ import annotations

import time
from typing import Callable, Final, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

__all__ = ["latency_summary", "time_calls", "PERCENTILE_METHOD"]

# numpy's default: linear interpolation between the two nearest ranks (Hyndman & Fan
# type 7, as in R and Excel's PERCENTILE.INC).
PERCENTILE_METHOD: Final = "linear"


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


def time_calls(call: Callable[[T], object], feeds: Sequence[T], seconds: float,
               warmup: int = 3) -> list[float]:
    """Wall-clock seconds of `call(feed)` over at least `seconds` (and `warmup` timed calls)
    after `warmup` untimed ones, cycling through `feeds`. For short trials; `bench` does more."""
    for i in range(warmup):
        call(feeds[i % len(feeds)])
    timings: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(timings) < warmup:
        t = time.perf_counter()
        call(feeds[len(timings) % len(feeds)])
        timings.append(time.perf_counter() - t)
    return timings
