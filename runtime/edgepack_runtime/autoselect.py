"""`artifact="auto"`: pick the fastest candidate artifact × thread count on this device.

A short measured trial (bounded to a few seconds) runs on first use; the choice and its
evidence are cached per bundle (manifest hash) and device, so later loads are instant.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Optional


from .bundle import Bundle
from .device import device_key
from .files import atomic_write, user_dir
from .model import candidates, default_threads, load
from .parity import split_samples
from .stats import latency_summary, time_calls

__all__ = ["auto_choice", "cached_choice", "cache_path", "thread_options"]

TRIAL_BUDGET_S = 4.0  # whole trial, split evenly between candidates
MAX_TRIAL_PER_CANDIDATE_S = 0.5
TRIAL_WARMUP_RUNS = 3


def cache_path(bundle: Bundle) -> Path:
    device = hashlib.sha256(device_key().encode()).hexdigest()[:16]
    return user_dir("cache", "edgepack-runtime") / "auto" / f"{bundle.sha256[:16]}-{device}.json"


def thread_options(bundle: Bundle) -> list[int]:
    """1 thread and the target's default (capped at this machine's cores)."""
    return sorted({1, default_threads(bundle)})


def cached_choice(bundle: Bundle) -> Optional[dict]:
    try:
        return json.loads(cache_path(bundle).read_text())
    except (OSError, ValueError):
        return None


def _trial(bundle: Bundle, artifact: str, threads: int, seconds: float) -> float:
    """p50 latency (ms) of one candidate over `seconds` of runs on golden inputs."""
    model = load(bundle.root, artifact=artifact, threads=threads)
    feeds = split_samples(bundle.golden()[0])
    return latency_summary(time_calls(model.run, feeds, seconds, TRIAL_WARMUP_RUNS))["p50"]


def auto_choice(bundle: Bundle, refresh: bool = False) -> dict:
    """The cached choice for this bundle and device, measuring it first if needed."""
    if not refresh and (cached := cached_choice(bundle)) is not None:
        return cached
    options = [(a.name, t) for a in candidates(bundle) for t in thread_options(bundle)]
    per_candidate = min(MAX_TRIAL_PER_CANDIDATE_S, TRIAL_BUDGET_S / len(options))
    evidence = [
        {"artifact": name, "threads": threads, "p50_ms": _trial(bundle, name, threads, per_candidate)}
        for name, threads in options
    ]
    best = min(evidence, key=lambda e: e["p50_ms"])
    choice = {
        "artifact": best["artifact"],
        "threads": best["threads"],
        "p50_ms": best["p50_ms"],
        "evidence": sorted(evidence, key=lambda e: e["p50_ms"]),
        "trial_seconds_per_candidate": per_candidate,
        "bundle_sha256": bundle.sha256,
        "device": device_key(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = cache_path(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(choice, indent=2))  # concurrent first loads never see half a cache
    return choice
