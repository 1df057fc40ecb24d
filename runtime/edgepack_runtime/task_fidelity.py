"""An artifact's outputs vs PyTorch's, judged by what the model's user sees (manifest.TASKS).

One cosine over a whole output tensor hides destroyed answers: a detector's head mixes box
coordinates up to ~640 with 0..1 class scores, so zeroed scores leave the cosine at 0.9998;
close top logits of a classifier swap under int8 while the cosine stays at 0.99. So each
task has its own figures, each with a 95 % interval and the count it rests on:

- classify: top-1 agreement with PyTorch (the floor), top-5 containment (PyTorch's top-1
  among the artifact's top 5), the logits' cosine (reported);
- detect: F1 of the artifact's detections after decoding and NMS against PyTorch's (IoU
  0.5, same class; the floor) and mAP50 with PyTorch's detections as ground truth;
- embed: the embeddings' cosine (the floor);
- generic: the cosine of each output tensor on its own (each a floor), so a large-valued
  output cannot hide a destroyed one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .detection import MAP_SCORE_THRESHOLD, detect, f1_score, map50
from .manifest import DetectionSettings, TaskMetric

__all__ = ["Floors", "task_metrics", "floor_of", "without_background_boxes", "comparable", "wilson_interval", "mean_interval", "headline"]

Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval
BOOTSTRAP_RESAMPLES = 400  # F1 and mAP50 intervals: resampled images
BOOTSTRAP_SEED = 0  # the same data gives the same interval
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


def wilson_interval(successes: int, total: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion, in percent: honest at 8 samples and at 100 %."""
    if total == 0:
        return 0.0, 100.0
    p = successes / total
    centre = (p + Z95 ** 2 / (2 * total)) / (1 + Z95 ** 2 / total)
    half = Z95 * math.sqrt(p * (1 - p) / total + Z95 ** 2 / (4 * total ** 2)) / (1 + Z95 ** 2 / total)
    return max(0.0, centre - half) * 100, min(1.0, centre + half) * 100


def mean_interval(values: np.ndarray, low: float = -1.0, high: float = 1.0) -> tuple[float, float]:
    """95 % normal interval of a mean (clipped to [low, high]); one value: the value itself."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(len(values))
    return max(low, mean - half), min(high, mean + half)


def _cosines(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of two [N, ...] arrays (both zero: 1, one zero: 0)."""
    a = out.reshape(len(out), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(na * nb > 0, np.sum(a * b, axis=1) / (na * nb), np.where((na == 0) & (nb == 0), 1.0, 0.0))
    return np.clip(cos, -1.0, 1.0)


def _cosine_metric(name: str, out: np.ndarray, ref: np.ndarray, floor: Optional[float]) -> TaskMetric:
    cos = _cosines(out, ref)
    low, high = mean_interval(cos)
    return TaskMetric(name=name, value=float(cos.mean()), low=low, high=high, samples=len(cos), floor=floor)


def _classify(out: np.ndarray, ref: np.ndarray, floors: Floors) -> tuple[TaskMetric, ...]:
    n = len(ref)
    scores, truth = out.reshape(n, -1), ref.reshape(n, -1).argmax(axis=1)
    agree = int(np.sum(scores.argmax(axis=1) == truth))
    k = min(TOP_K, scores.shape[1])
    top_k = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    contained = int(np.sum(np.any(top_k == truth[:, None], axis=1)))
    return (
        TaskMetric("top1_agreement", agree / n * 100, *wilson_interval(agree, n), samples=n,
                   floor=floor_of("classify", "top1_agreement", floors)),
        TaskMetric(f"top{k}_agreement", contained / n * 100, *wilson_interval(contained, n), samples=n),
        _cosine_metric("cosine", out, ref, floor_of("classify", "cosine", floors)),
    )


def _bootstrap(statistic, found: list, reference: list) -> tuple[float, float]:
    """95 % percentile interval of `statistic(found, reference)` over images resampled with replacement."""
    n = len(reference)
    if n < 2:
        value = statistic(found, reference)
        return value, value
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pick = rng.integers(0, n, n)
        values.append(statistic([found[i] for i in pick], [reference[i] for i in pick]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _detect(out: np.ndarray, ref: np.ndarray, floors: Floors, settings: DetectionSettings) -> tuple[TaskMetric, ...]:
    reference = [detect(r, settings) for r in ref]
    found = [detect(o, settings) for o in out]
    ranked = [detect(o, settings, score_threshold=MAP_SCORE_THRESHOLD) for o in out]
    f1 = lambda f, r: f1_score(f, r)[0]  # noqa: E731
    n = len(ref)
    return (
        TaskMetric("f1", f1(found, reference), *_bootstrap(f1, found, reference), samples=n,
                   floor=floor_of("detect", "f1", floors)),
        TaskMetric("map50", map50(ranked, reference), *_bootstrap(map50, ranked, reference), samples=n),
    )


def task_metrics(task: str, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], floors: Floors,
                 answer_output: Optional[str] = None, detection: Optional[DetectionSettings] = None
                 ) -> tuple[TaskMetric, ...]:
    """The task's figures for stacked outputs ([N, ...] per name) vs PyTorch's, the floor
    first. `answer_output`: the output the answer is read from (default: the first)."""
    names = list(reference)
    main = answer_output or names[0]
    if task == "classify":
        return _classify(outputs[main], reference[main], floors)
    if task == "detect":
        return _detect(outputs[main], reference[main], floors, detection or DetectionSettings())
    if task == "embed" or len(names) == 1:
        return (_cosine_metric("cosine", outputs[main], reference[main], floor_of(task, "cosine", floors)),)
    return tuple(_cosine_metric(f"cosine:{n}", outputs[n], reference[n], floor_of(task, f"cosine:{n}", floors))
                 for n in names)


def headline(metrics: tuple[TaskMetric, ...]) -> Optional[TaskMetric]:
    """The figure artifacts are ranked by: the lowest against its floor (the first when none has one)."""
    floored = [m for m in metrics if m.floor is not None]
    if not floored:
        return metrics[0] if metrics else None
    return min(floored, key=lambda m: m.value - m.floor)



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
