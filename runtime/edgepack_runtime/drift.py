"""Input drift: how far recent inputs are from the calibration data the model was built on.

Score: the Population Stability Index (PSI) of each input's value histogram, recent
window vs. reference:  PSI = Σ (p_i − q_i) · ln(p_i / q_i)  over the bins, where q is the
calibration data's fraction per bin and p the recent inputs'. Bins: 10 equal-width bins
over the calibration range plus one open bin below and one above, so values outside
the calibrated range (the case int8 clips) count fully. Usual reading (and ours):
PSI < 0.1 stable, 0.1–0.25 moderate shift, ≥ 0.25 drift.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["reference_stats", "DriftMonitor", "psi", "check_reference", "DRIFT_THRESHOLD", "MODERATE_THRESHOLD"]

BINS = 10
MODERATE_THRESHOLD = 0.1
DRIFT_THRESHOLD = 0.25
EPSILON = 1e-4  # keeps ln finite for empty bins
SAMPLED_ELEMENTS = 4096  # per input and inference: bounds the cost on large tensors
SAMPLE_SEED = 0
DEFAULT_WINDOW = 500  # inferences
MIN_OBSERVATIONS = 30  # fewer inferences give no score (too noisy to act on)


def _edges(low: float, high: float) -> np.ndarray:
    if high <= low:
        high = low + 1.0
    return np.linspace(low, high, BINS + 1)


def _counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in [-inf, e0), [e0, e1), …, [e9, e10], (e10, inf)."""
    idx = np.searchsorted(edges, values, side="right")
    idx[values == edges[-1]] = len(edges) - 1  # the top edge belongs to the last inner bin
    return np.bincount(idx, minlength=len(edges) + 1)


def psi(reference: np.ndarray, recent: np.ndarray) -> float:
    q = np.asarray(reference, dtype=np.float64) + EPSILON
    p = np.asarray(recent, dtype=np.float64) + EPSILON
    q, p = q / q.sum(), p / p.sum()
    return float(np.sum((p - q) * np.log(p / q)))


def reference_stats(samples: np.ndarray) -> dict[str, Any]:
    """Reference statistics of one input from calibration samples [N, *shape] (shape [1, C, …])."""
    values = samples.astype(np.float64).ravel()
    edges = _edges(float(values.min()), float(values.max()))
    counts = _counts(values, edges)
    stats = {"edges": edges.tolist(), "fractions": (counts / counts.sum()).tolist(), "samples": int(len(samples))}
    if samples.ndim >= 3:  # [N, 1, C, ...]: per channel
        per_channel = np.moveaxis(samples[:, 0], 1, 0).reshape(samples.shape[2], -1).astype(np.float64)
        stats["channel_mean"] = per_channel.mean(axis=1).tolist()
        stats["channel_std"] = per_channel.std(axis=1).tolist()
    return stats


MAX_EDGES = 1025  # a reference with more bins than this is not one drift.py wrote


def check_reference(reference: object, shapes: Mapping[str, tuple[int, ...]]) -> Optional[str]:
    """Why a manifest's drift reference cannot be used (None when it can): checked once,
    when the bundle is loaded, so that a damaged one disables drift instead of failing an
    inference. Each input it names must exist, with increasing finite `edges` and one more
    non-negative finite `fractions` than edges."""
    if not isinstance(reference, Mapping) or not reference:
        return "it is not a table of inputs"
    for name, ref in reference.items():
        if name not in shapes:
            return f"it names input {str(name)[:40]!r}, which the model does not have"
        if not isinstance(ref, Mapping):
            return f"its entry for {name!r} is not a table"
        try:
            edges = np.asarray(ref["edges"], dtype=np.float64)
            fractions = np.asarray(ref["fractions"], dtype=np.float64)
        except (KeyError, TypeError, ValueError, OverflowError):
            return f"its entry for {name!r} lacks numeric edges and fractions"
        if edges.ndim != 1 or not 2 <= len(edges) <= MAX_EDGES or not np.all(np.isfinite(edges)) \
                or not np.all(np.diff(edges) > 0):
            return f"the bin edges of {name!r} are not increasing finite numbers"
        if fractions.shape != (len(edges) + 1,) or not np.all(np.isfinite(fractions)) or np.any(fractions < 0):
            return f"the fractions of {name!r} do not fit its {len(edges)} edges"
        try:
            size = int(np.prod([int(d) for d in shapes[name]], dtype=np.int64))
        except (TypeError, ValueError, OverflowError):
            return f"the shape of input {name!r} is not a list of sizes"
        if size < 1:
            return f"input {name!r} has no elements to sample"
    return None


class DriftMonitor:
    """PSI of recent inputs (a sliding window of inferences) against the manifest's reference."""

    def __init__(self, reference: Mapping[str, dict[str, Any]], shapes: Mapping[str, tuple[int, ...]],
                 window: int = DEFAULT_WINDOW) -> None:
        rng = np.random.default_rng(SAMPLE_SEED)
        self._edges = {name: np.asarray(ref["edges"]) for name, ref in reference.items()}
        self._reference = {name: np.asarray(ref["fractions"]) for name, ref in reference.items()}
        self._positions = {}
        for name in reference:
            size = int(np.prod(shapes[name]))
            self._positions[name] = (np.sort(rng.choice(size, SAMPLED_ELEMENTS, replace=False))
                                     if size > SAMPLED_ELEMENTS else None)
        self._window: dict[str, deque[np.ndarray]] = {name: deque(maxlen=window) for name in reference}
        self._totals = {name: np.zeros(len(self._edges[name]) + 1, dtype=np.int64) for name in reference}

    def observe(self, inputs: Mapping[str, np.ndarray]) -> None:
        for name, edges in self._edges.items():
            value = inputs.get(name)
            if value is None:
                continue
            flat = value.reshape(-1)
            positions = self._positions[name]
            if positions is not None and flat.size <= positions[-1]:  # a dynamic dim smaller than built at
                positions = positions[positions < flat.size]
            counts = _counts(flat if positions is None else flat[positions], edges)
            window = self._window[name]
            if len(window) == window.maxlen:
                self._totals[name] -= window[0]
            window.append(counts)
            self._totals[name] += counts

    def scores(self) -> dict[str, Optional[float]]:
        """PSI per input, None until MIN_OBSERVATIONS inferences were seen."""
        return {name: psi(self._reference[name], self._totals[name]) if len(self._window[name]) >= MIN_OBSERVATIONS
                else None for name in self._reference}
