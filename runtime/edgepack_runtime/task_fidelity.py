"""An artifact's outputs vs PyTorch's, judged by what the model's user sees: the figures'
helpers every task shares (tasks/: each task's own figures, floor and error).

One cosine over a whole output tensor hides destroyed answers: a detector's head mixes box
coordinates up to ~640 with 0..1 class scores, so zeroed scores leave the cosine at 0.9998;
close top logits of a classifier swap under int8 while the cosine stays at 0.99. So each
task has its own figures (tasks/classify.py, detect.py, vectors.py, segment.py), each
with a 95 % interval and the count it rests on (the independent groups of samples:
intervals.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .intervals import group_index, mean_interval, ratio_interval
from .manifest import TaskMetric

__all__ = ["Floors", "headline", "sample_cosines", "cosine_metric", "agreement_metric", "group_count"]


@dataclass(frozen=True)
class Floors:
    """The budget's minimums per figure (Budget in the packager)."""

    min_cosine: float
    min_agreement: float  # % top-1 agreement (classify)
    min_f1: float  # detection F1 vs PyTorch (detect)
    min_iou: float = 0.95  # mask IoU vs PyTorch (segment)


def group_count(groups: Optional[np.ndarray], count: int) -> int:
    """How many independent groups `count` samples form."""
    return int(group_index(groups, count).max()) + 1 if count else 0


def _per_group(hits: np.ndarray, groups: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    index = group_index(groups, len(hits))
    return np.bincount(index, weights=hits.astype(np.float64)), np.bincount(index).astype(np.float64)


def sample_cosines(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of two [N, ...] arrays (both zero: 1, one zero: 0)."""
    a = out.reshape(len(out), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(na * nb > 0, np.sum(a * b, axis=1) / (na * nb), np.where((na == 0) & (nb == 0), 1.0, 0.0))
    return np.clip(cos, -1.0, 1.0)


def cosine_metric(name: str, out: np.ndarray, ref: np.ndarray, floor: Optional[float],
                  groups: Optional[np.ndarray]) -> TaskMetric:
    """The mean per-sample cosine of `out` to `ref`, with its interval over groups."""
    cos = sample_cosines(out, ref)
    low, high = mean_interval(cos, groups)
    return TaskMetric(name=name, value=float(cos.mean()), low=low, high=high, samples=len(cos), floor=floor,
                      groups=group_count(groups, len(cos)))


def agreement_metric(name: str, hits: np.ndarray, groups: Optional[np.ndarray], floor: Optional[float]) -> TaskMetric:
    """The share of `hits` (booleans, or per-sample shares) in percent, with its interval over groups."""
    low, high = ratio_interval(*_per_group(hits, groups))
    return TaskMetric(name, float(hits.mean()) * 100, low * 100, high * 100, samples=len(hits), floor=floor,
                      groups=group_count(groups, len(hits)))


def headline(metrics: tuple[TaskMetric, ...]) -> Optional[TaskMetric]:
    """The figure artifacts are ranked by: the lowest against its floor (the first when none has one)."""
    floored = [m for m in metrics if m.floor is not None]
    if not floored:
        return metrics[0] if metrics else None
    return min(floored, key=lambda m: m.value - (m.floor if m.floor is not None else 0.0))
