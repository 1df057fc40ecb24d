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
- embed, generic: 1 - the cosine of the sample's output (the worst output's);
- segment: the RMS error of the map in units of the spread of all the maps (a flat map of a
  photo without an object has no spread of its own to speak of).

Each is its task's `sample_errors` (edgepack_runtime.tasks).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from edgepack_runtime.intervals import group_index

__all__ = ["MIN_GROUPS_TO_TRADE", "clearly_closer", "group_errors"]

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
