"""An artifact's outputs vs PyTorch's, judged by what the model's user sees (manifest.TASKS).

One cosine over a whole output tensor hides destroyed answers: a detector's head mixes box
coordinates up to ~640 with 0..1 class scores, so zeroed scores leave the cosine at 0.9998;
close top logits of a classifier swap under int8 while the cosine stays at 0.99. So each
task has its own figures, each with a 95 % interval and the count it rests on (the
independent groups of samples: intervals.py):

- classify: top-1 agreement with PyTorch (the floor), top-5 containment (PyTorch's top-1
  among the artifact's top 5), the logits' cosine (reported);
- detect: F1 of the artifact's detections after decoding and NMS against PyTorch's (IoU
  0.5, same class; the floor) and mAP50 with PyTorch's detections as ground truth;
- embed: the embeddings' cosine (the floor);
- generic: the cosine of each output tensor on its own (each a floor), so a large-valued
  output cannot hide a destroyed one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .detection import MAP_SCORE_THRESHOLD, detect, f1_score, map50, match
from .intervals import group_bootstrap, group_index, mean_interval, ratio_interval
from .manifest import DetectionSettings, TaskMetric

__all__ = ["Floors", "task_metrics", "floor_of", "without_background_boxes", "comparable", "headline", "sample_cosines"]

TOP_K = 5
BOX_ROWS = 4  # a "yolo" detector output's first rows: cx, cy, w, h


@dataclass(frozen=True)
class Floors:
    """The budget's minimums per figure (Budget in the packager)."""

    min_cosine: float
    min_agreement: float  # % top-1 agreement (classify)
    min_f1: float  # detection F1 vs PyTorch (detect)


def floor_of(task: str, metric: str, floors: Floors) -> Optional[float]:
    """The minimum `metric` must reach for `task`, or None when it is reported only."""
    if metric == "top1_agreement" and task == "classify":
        return floors.min_agreement
    if metric == "f1" and task == "detect":
        return floors.min_f1
    if metric.startswith("cosine") and task in ("embed", "generic"):
        return floors.min_cosine
    return None


def _units(groups: Optional[np.ndarray], count: int) -> int:
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


def _cosine_metric(name: str, out: np.ndarray, ref: np.ndarray, floor: Optional[float],
                   groups: Optional[np.ndarray]) -> TaskMetric:
    cos = sample_cosines(out, ref)
    low, high = mean_interval(cos, groups)
    return TaskMetric(name=name, value=float(cos.mean()), low=low, high=high, samples=len(cos), floor=floor,
                      groups=_units(groups, len(cos)))


def _agreement(name: str, hits: np.ndarray, groups: Optional[np.ndarray], floor: Optional[float]) -> TaskMetric:
    low, high = ratio_interval(*_per_group(hits, groups))
    return TaskMetric(name, float(hits.mean()) * 100, low * 100, high * 100, samples=len(hits), floor=floor,
                      groups=_units(groups, len(hits)))


def _classify(out: np.ndarray, ref: np.ndarray, floors: Floors, groups: Optional[np.ndarray]
              ) -> tuple[TaskMetric, ...]:
    n = len(ref)
    scores, truth = out.reshape(n, -1), ref.reshape(n, -1).argmax(axis=1)
    k = min(TOP_K, scores.shape[1])
    top_k = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return (
        _agreement("top1_agreement", scores.argmax(axis=1) == truth, groups,
                   floor_of("classify", "top1_agreement", floors)),
        _agreement(f"top{k}_agreement", np.any(top_k == truth[:, None], axis=1), groups, None),
        _cosine_metric("cosine", out, ref, floor_of("classify", "cosine", floors), groups),
    )


def _detect(out: np.ndarray, ref: np.ndarray, floors: Floors, settings: DetectionSettings,
            groups: Optional[np.ndarray]) -> tuple[TaskMetric, ...]:
    reference = [detect(r, settings) for r in ref]
    found = [detect(o, settings) for o in out]
    ranked = [detect(o, settings, score_threshold=MAP_SCORE_THRESHOLD) for o in out]
    n = len(ref)
    # F1 = 2TP / (2TP + FP + FN) pooled over images: a ratio whose unit is the group of images
    tp = np.array([match(f, r).sum() for f, r in zip(found, reference)], np.float64)
    trials = np.array([len(f) + len(r) for f, r in zip(found, reference)], np.float64)  # 2TP + FP + FN
    index = group_index(groups, n)
    low, high = ratio_interval(np.bincount(index, weights=2 * tp), np.bincount(index, weights=trials))
    hits = [match(f, r) for f, r in zip(ranked, reference)]  # once: the bootstrap below resamples these images

    def mean_ap(pick: np.ndarray) -> float:
        return map50([ranked[i] for i in pick], [reference[i] for i in pick], [hits[i] for i in pick])

    units = _units(groups, n)
    return (
        TaskMetric("f1", f1_score(found, reference)[0], low, high, samples=n, floor=floor_of("detect", "f1", floors),
                   groups=units),
        TaskMetric("map50", mean_ap(np.arange(n)), *group_bootstrap(mean_ap, groups, n), samples=n, groups=units),
    )


def task_metrics(task: str, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], floors: Floors,
                 answer_output: Optional[str] = None, detection: Optional[DetectionSettings] = None,
                 groups: Optional[np.ndarray] = None) -> tuple[TaskMetric, ...]:
    """The task's figures for stacked outputs ([N, ...] per name) vs PyTorch's, the floor
    first. `answer_output`: the output the answer is read from (default: the first).
    `groups`: one id per sample, the independent units the intervals rest on (intervals.py)."""
    names = list(reference)
    main = answer_output or names[0]
    if task == "classify":
        return _classify(outputs[main], reference[main], floors, groups)
    if task == "detect":
        return _detect(outputs[main], reference[main], floors, detection or DetectionSettings(), groups)
    if task == "embed" or len(names) == 1:
        return (_cosine_metric("cosine", outputs[main], reference[main], floor_of(task, "cosine", floors), groups),)
    return tuple(_cosine_metric(f"cosine:{n}", outputs[n], reference[n], floor_of(task, f"cosine:{n}", floors), groups)
                 for n in names)


def headline(metrics: tuple[TaskMetric, ...]) -> Optional[TaskMetric]:
    """The figure artifacts are ranked by: the lowest against its floor (the first when none has one)."""
    floored = [m for m in metrics if m.floor is not None]
    if not floored:
        return metrics[0] if metrics else None
    return min(floored, key=lambda m: m.value - (m.floor if m.floor is not None else 0.0))



def without_background_boxes(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], output: str,
                             settings: DetectionSettings) -> dict[str, np.ndarray]:
    """`outputs` with the box rows of every anchor the reference keeps no detection for set
    to the reference's: a detector's background anchors have no box to speak of (their box
    distribution is flat, int8 moves its mean by hundreds of pixels), and the parity check
    of a detector compares what can become a detection: every score, and the boxes of
    anchors whose best score reaches the threshold."""
    out, ref = np.array(outputs[output], copy=True), reference[output]
    rows = out.reshape(len(out), out.shape[-2], out.shape[-1])  # [N, 4 + classes, anchors]
    ref_rows = ref.reshape(len(ref), ref.shape[-2], ref.shape[-1])
    background = ref_rows[:, BOX_ROWS:].max(axis=1) < settings.score_threshold  # [N, anchors]
    for i in range(len(rows)):
        rows[i, :BOX_ROWS, background[i]] = ref_rows[i, :BOX_ROWS, background[i]]
    return {**outputs, output: rows.reshape(out.shape)}


def comparable(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], task: Optional[str],
               answer_output: Optional[str], detection: Optional[DetectionSettings]) -> dict[str, np.ndarray]:
    """`outputs` as the parity checks compare them with `reference`: as they are, but for a
    detector without its background anchors' boxes (without_background_boxes)."""
    if task != "detect":
        return dict(outputs)
    return without_background_boxes(outputs, reference, answer_output or next(iter(reference)),
                                    detection or DetectionSettings())
