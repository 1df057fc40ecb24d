"""How far an artifact's answers sit from PyTorch's, per sample, on a continuous scale.

The task's figures count answers that changed (agreement, detection F1); near the floor a
count moves by a few answers that sit at the edge, so ranking quantization candidates by it
keeps whichever the selection samples happened to favour. This error measures how close
each answer came to changing, with low variance, so the search can rank candidates and see
a margin (lower is better, 0 is PyTorch's own answer):

- classify: the root-mean-square error of the logits, in units of that sample's logit
  spread. Not the shift of PyTorch's top-1 margin: the samples that choose are often
  confident, the user's next images often are not, and what flips an unsure answer is the
  noise on every class that could take the lead. Measured on the ImageNet MobileNetV2
  example over 18 int8 candidates (benchmarks/error_transfer.py): ranked on calibration
  views, this error orders the candidates' agreement on 72 unseen views with Spearman
  +0.94 (1 - cosine +0.93), where the margin shift gave -0.19 and agreement itself -0.08;
- detect ("yolo" layout): the class-score error of the anchors near or above the score
  threshold, in units of the threshold (a box that crosses it appears or disappears), plus
  1 - IoU of the boxes PyTorch keeps;
- embed, generic: 1 - the cosine of the sample's output (the worst output's).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

from edgepack_runtime.intervals import group_index
from edgepack_runtime.manifest import DetectionSettings
from edgepack_runtime.task_fidelity import sample_cosines

__all__ = ["MIN_GROUPS_TO_TRADE", "clearly_closer", "group_errors", "sample_errors"]

BOX_ROWS = 4  # "yolo": cx, cy, w, h, then one row per class
NEAR_THRESHOLD = 0.5  # anchors whose best score reaches this share of the threshold can cross it
# Below this many groups a paired standard error is itself too uncertain to call two
# candidates equally faithful, or one clearly closer: the rules then ask it of every group.
MIN_GROUPS_TO_TRADE = 8
# Paired standard errors by which one artifact's error must beat another's before the other
# is left out for it (pipeline._dominated): about 95 % one-sided at 8 groups.
CLEARLY = 2.0
# ... and by how much: with hundreds of groups a trivial difference is clear too. The
# ImageNet MobileNetV2 example's int8 candidates differ by 25-40 % where one loses answers
# the other keeps on unseen photos (benchmarks/error_transfer.py).
MATERIALLY = 0.8  # the closer one's mean error at most this share of the other's


def _classify(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    n = len(ref)
    out, ref = out.reshape(n, -1).astype(np.float64), ref.reshape(n, -1).astype(np.float64)
    spread = np.maximum(ref.std(axis=1), 1e-12)
    return np.sqrt(((out - ref) ** 2).mean(axis=1)) / spread


def _xyxy(rows: np.ndarray) -> np.ndarray:
    cx, cy, w, h = rows
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired boxes, [4, K] each (x1y1x2y2)."""
    inter = (np.clip(np.minimum(a[2], b[2]) - np.maximum(a[0], b[0]), 0, None)
             * np.clip(np.minimum(a[3], b[3]) - np.maximum(a[1], b[1]), 0, None))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _detect(out: np.ndarray, ref: np.ndarray, settings: DetectionSettings) -> np.ndarray:
    threshold = settings.score_threshold
    errors = []
    for o, r in zip(out.reshape(len(out), out.shape[-2], out.shape[-1]).astype(np.float64),
                    ref.reshape(len(ref), ref.shape[-2], ref.shape[-1]).astype(np.float64), strict=True):
        ref_best, out_best = r[BOX_ROWS:].max(axis=0), o[BOX_ROWS:].max(axis=0)
        near = (ref_best >= threshold * NEAR_THRESHOLD) | (out_best >= threshold * NEAR_THRESHOLD)
        score = (np.abs(o[BOX_ROWS:, near] - r[BOX_ROWS:, near]).max(axis=0) / threshold).mean() if near.any() else 0.0
        kept = ref_best >= threshold
        box = (1 - _iou(_xyxy(o[:BOX_ROWS, kept]), _xyxy(r[:BOX_ROWS, kept]))).mean() if kept.any() else 0.0
        errors.append(score + box)
    return np.array(errors)


def sample_errors(task: str, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                  answer_output: Optional[str] = None, detection: Optional[DetectionSettings] = None) -> np.ndarray:
    """The error of each sample's answer vs PyTorch's (lower is closer; see the module)."""
    main = answer_output or next(iter(reference))
    if task == "classify":
        return _classify(outputs[main], reference[main])
    if task == "detect":
        return _detect(outputs[main], reference[main], detection or DetectionSettings())
    names = [main] if task == "embed" else list(reference)
    return np.max([1 - sample_cosines(outputs[n], reference[n]) for n in names], axis=0)


def group_errors(errors: np.ndarray, groups: Optional[np.ndarray]) -> np.ndarray:
    """The mean error of each group (in order of first appearance): the unit of every comparison."""
    index = group_index(groups, len(errors))
    return np.bincount(index, weights=errors) / np.bincount(index)


def clearly_closer(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether per-group errors `a` beat `b` (the same groups, in the same order) by more
    than CLEARLY paired standard errors (below MIN_GROUPS_TO_TRADE groups, in every group),
    with a mean at most MATERIALLY times `b`'s."""
    diff = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    if np.mean(a) > MATERIALLY * np.mean(b):
        return False
    if len(diff) < MIN_GROUPS_TO_TRADE:
        return bool(np.all(diff > 0))
    return float(diff.mean()) > CLEARLY * float(diff.std(ddof=1)) / math.sqrt(len(diff))
