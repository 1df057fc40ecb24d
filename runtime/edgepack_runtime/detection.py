"""A detector's raw output → boxes, and how closely two detectors' boxes agree.

Decoding and class-aware NMS follow Ultralytics' `non_max_suppression` for its exported
head ([4 + classes, anchors]: cx, cy, w, h in input pixels, then class scores in 0..1),
vectorised in numpy. The same functions serve the device (`Model.predict`) and the build,
which judges a detector's artifacts by their detections after NMS against PyTorch's (F1
at IoU 0.5 with the same class, and mAP50 with PyTorch's detections as ground truth): a
whole-tensor figure mixes pixel-sized boxes with 0..1 scores and hides destroyed scores.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .manifest import DetectionSettings

__all__ = ["Detections", "decode", "nms", "detect", "iou_matrix", "match", "f1_score", "map50",
           "MATCH_IOU", "MAP_SCORE_THRESHOLD"]

MATCH_IOU = 0.5  # a detection agrees with a reference one at this IoU or more, same class
# mAP ranks every box a detector keeps, as Ultralytics' validation does (conf 0.001), so a
# detector that only lowers its scores loses little mAP but may lose F1 at the deployed threshold.
MAP_SCORE_THRESHOLD = 0.001
# Ultralytics' NMS looks at this many boxes at most (by score) before suppressing.
MAX_NMS_CANDIDATES = 30_000


@dataclass
class Detections:
    """Boxes [K, 4] as x1, y1, x2, y2, their scores [K] and class indices [K], best first."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def decode(output: np.ndarray, score_threshold: float) -> Detections:
    """One image's raw "yolo" output [4 + classes, anchors] (a leading batch axis of 1 is
    dropped) → candidate boxes in x1y1x2y2 whose best class scores ≥ `score_threshold`."""
    values = np.asarray(output, np.float32)
    if values.ndim == 3:
        values = values[0]
    scores_all = values[4:]
    # The best score per anchor is a reduction along rows (fast on this layout); the best
    # class (an argmax across rows, 3x slower) is only needed for the few anchors kept.
    best = scores_all.max(axis=0)
    keep = np.flatnonzero(best >= score_threshold)
    if keep.size > MAX_NMS_CANDIDATES:
        keep = keep[np.argsort(-best[keep], kind="stable")[:MAX_NMS_CANDIDATES]]
    classes = scores_all[:, keep].argmax(axis=0)
    cx, cy, w, h = values[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return Detections(boxes, best[keep], classes.astype(np.int64))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] (x1y1x2y2): [N, M]."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def nms(found: Detections, iou_threshold: float, max_detections: int) -> Detections:
    """Class-aware greedy NMS: best score first, a box is dropped when it overlaps a kept
    box of the same class by more than `iou_threshold` (torchvision's `batched_nms`, which
    Ultralytics calls). Each kept box costs one vectorised pass over the candidates, so the
    work grows with the boxes kept, not with the square of the candidates, and IoUs are
    computed on the boxes themselves (no per-class coordinate offsets losing float32
    precision)."""
    if len(found) == 0:
        return found
    order = np.argsort(-found.scores, kind="stable")
    boxes, scores, classes = found.boxes[order], found.scores[order], found.classes[order]
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    alive = np.ones(len(boxes), bool)
    kept: list[int] = []
    i = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:
            kept.append(i)
            alive[i] = False
            if len(kept) == max_detections:
                break
            inter = (np.clip(np.minimum(x2[i], x2) - np.maximum(x1[i], x1), 0, None)
                     * np.clip(np.minimum(y2[i], y2) - np.maximum(y1[i], y1), 0, None))
            union = areas[i] + areas - inter
            # A zero-area union gives NaN, which compares False: such a box suppresses nothing.
            alive &= ~((inter / union > iou_threshold) & (classes == classes[i]))
            following = alive[i + 1:]
            if not following.any():
                break
            i += 1 + int(following.argmax())
    pick = np.asarray(kept, np.int64)
    return Detections(boxes[pick], scores[pick], classes[pick])


def detect(output: np.ndarray, settings: DetectionSettings, score_threshold: Optional[float] = None,
           iou_threshold: Optional[float] = None, max_detections: Optional[int] = None) -> Detections:
    """One image's raw output → its detections (input-pixel coordinates), with the
    manifest's thresholds unless overridden."""
    threshold = settings.score_threshold if score_threshold is None else score_threshold
    return nms(decode(output, threshold), settings.iou_threshold if iou_threshold is None else iou_threshold,
               settings.max_detections if max_detections is None else max_detections)


def match(found: Detections, reference: Detections, iou: float = MATCH_IOU) -> np.ndarray:
    """Which of `found` (best first) match a reference box of the same class at `iou` or
    more, each reference box matched at most once (greedy by score, as COCO's evaluation)."""
    hits = np.zeros(len(found), bool)
    if len(found) == 0 or len(reference) == 0:
        return hits
    overlap = iou_matrix(found.boxes, reference.boxes)
    overlap[found.classes[:, None] != reference.classes[None, :]] = 0.0
    taken = np.zeros(len(reference), bool)
    for i in np.argsort(-found.scores, kind="stable"):
        candidates = np.where(taken, -1.0, overlap[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou:
            hits[i], taken[j] = True, True
    return hits


def f1_score(found: Sequence[Detections], reference: Sequence[Detections]) -> tuple[float, int, int, int]:
    """F1 of `found` against `reference` over images (IoU 0.5, same class): (f1, true
    positives, false positives, false negatives). Both empty everywhere: 1.0."""
    tp = sum(int(match(f, r).sum()) for f, r in zip(found, reference))
    fp = sum(len(f) for f in found) - tp
    fn = sum(len(r) for r in reference) - tp
    return (1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)), tp, fp, fn


def map50(found: Sequence[Detections], reference: Sequence[Detections],
          hits: Optional[Sequence[np.ndarray]] = None) -> float:
    """Mean over the reference's classes of the average precision at IoU 0.5 (all-point
    interpolation, as COCO's and Ultralytics' AP), `reference` taken as ground truth.
    No reference box anywhere: 1.0 when nothing was found either, else 0.0. `hits`: each
    image's `match(found, reference)`, when the caller has them (a bootstrap resamples the
    same images hundreds of times: matching them once is most of its cost)."""
    classes = sorted({int(c) for r in reference for c in r.classes})
    if not classes:
        return 1.0 if all(len(f) == 0 for f in found) else 0.0
    if hits is None:
        hits = [match(f, r) for f, r in zip(found, reference)]
    scores = np.concatenate([f.scores for f in found])
    hit = np.concatenate(hits)
    labels = np.concatenate([f.classes for f in found])
    truths = collections.Counter(int(c) for r in reference for c in r.classes)
    aps = []
    for c in classes:
        truth = truths[c]
        mine = labels == c
        order = np.argsort(-scores[mine], kind="stable")
        tp = np.cumsum(hit[mine][order])
        precision = tp / np.arange(1, len(tp) + 1)
        recall = tp / truth
        # The precision envelope, integrated over recall from 0 to 1.
        envelope = np.concatenate([[1.0], precision, [0.0]])
        envelope = np.maximum.accumulate(envelope[::-1])[::-1]
        steps = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
        aps.append(float(np.sum(np.diff(steps) * envelope[1:])))
    return float(np.mean(aps))
