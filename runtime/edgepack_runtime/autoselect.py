"""`artifact="auto"`: pick the fastest candidate artifact × thread count on this device.

A short measured trial (bounded to a few seconds) runs on first use; the choice and its
evidence are cached per bundle (manifest hash) and device, so later loads are instant.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .bundle import Bundle
from .device import device_key
from .files import atomic_write, user_dir
from .model import candidates, default_threads, load
from .parity import split_samples
from .stats import latency_summary, time_calls
from .typed import from_data
from .versions import newer_major, newer_minor, parse_version

__all__ = ["AutoChoice", "Trial", "auto_choice", "cached_choice", "cache_path", "thread_options", "AUTO_SCHEMA_VERSION"]

TRIAL_BUDGET_S = 4.0  # whole trial, split evenly between candidates
MAX_TRIAL_PER_CANDIDATE_S = 0.5
TRIAL_WARMUP_RUNS = 3


def cache_path(bundle: Bundle) -> Path:
    device = hashlib.sha256(device_key().encode()).hexdigest()[:16]
    return user_dir("cache", "edgepack-runtime") / "auto" / f"{bundle.sha256[:16]}-{device}.json"


def thread_options(bundle: Bundle) -> list[int]:
    """1 thread and the target's default (capped at this machine's cores)."""
    return sorted({1, default_threads(bundle)})


# "MAJOR.MINOR" of the cache file (versions.py): a cache this runtime cannot read is measured again.
AUTO_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class Trial:
    artifact: str
    threads: int
    p50_ms: float


@dataclass(frozen=True)
class AutoChoice:
    """The fastest candidate × threads of a bundle on one device, with what it rests on."""

    schema_version: str
    artifact: str
    threads: int
    p50_ms: float
    evidence: tuple[Trial, ...]  # every candidate tried, fastest first
    trial_seconds_per_candidate: float
    bundle_sha256: str
    device: str
    created: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cached_choice(bundle: Bundle) -> Optional[AutoChoice]:
    """The cached choice, or None when there is none or it no longer fits: unreadable, a
    newer major, another bundle, or an artifact that is no longer a candidate here."""
    try:
        data = json.loads(cache_path(bundle).read_text())
        version = parse_version(data.get("schema_version")) if isinstance(data, dict) else None
        if version is None or newer_major(version, AUTO_SCHEMA_VERSION):
            return None
        choice = from_data(AutoChoice, data, "auto choice", tolerate_unknown=newer_minor(version, AUTO_SCHEMA_VERSION))
    except (OSError, ValueError):  # Problem is a ValueError
        return None
    usable = {a.name for a in candidates(bundle)}
    return choice if choice.bundle_sha256 == bundle.sha256 and choice.artifact in usable else None


def _trial(bundle: Bundle, artifact: str, threads: int, seconds: float) -> float:
    """p50 latency (ms) of one candidate over `seconds` of runs on golden inputs."""
    model = load(bundle.root, artifact=artifact, threads=threads)
    feeds = split_samples(bundle.golden()[0])
    return latency_summary(time_calls(model.run, feeds, seconds, TRIAL_WARMUP_RUNS))["p50"]


def auto_choice(bundle: Bundle, refresh: bool = False) -> AutoChoice:
    """The cached choice for this bundle and device, measuring it first if needed."""
    if not refresh and (cached := cached_choice(bundle)) is not None:
        return cached
    options = [(a.name, t) for a in candidates(bundle) for t in thread_options(bundle)]
    per_candidate = min(MAX_TRIAL_PER_CANDIDATE_S, TRIAL_BUDGET_S / len(options))
    evidence = sorted((Trial(name, threads, _trial(bundle, name, threads, per_candidate)) for name, threads in options),
                      key=lambda t: t.p50_ms)
    best = evidence[0]
    choice = AutoChoice(
        schema_version=AUTO_SCHEMA_VERSION, artifact=best.artifact, threads=best.threads, p50_ms=best.p50_ms,
        evidence=tuple(evidence), trial_seconds_per_candidate=per_candidate, bundle_sha256=bundle.sha256,
        device=device_key(), created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    path = cache_path(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(choice.to_dict(), indent=2))  # concurrent first loads never see half a cache
    return choice
