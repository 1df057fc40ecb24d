"""Which judged samples choose a quantized artifact, and which confirm the choice.

A figure measured on the samples that chose the artifact is optimistic: among candidates
that differ by a few detections, the one the selection samples happened to favour wins
(12 photos claimed F1 0.986 for a detector; the next 21 photos gave 0.883). So the judged
samples are dealt by group into folds, and the two halves (even folds, odd folds) cross
over: the search's choice rule is run on each half, and each half's choice is confirmed
on the other half, which it never looked at. The pooled confirmation (every judged sample,
each judged by a choice made without it) is the figure the build prints, writes and ships
on; the artifact that ships is the rule's choice on all the judged samples (nested
cross-validation: the figure estimates what the rule yields on samples it did not see,
and when both halves choose the artifact that ships, it is that artifact's own figure).

The judged samples are --eval's, in EVAL_FOLDS folds; or, without --eval, the calibration
samples themselves, cross-fitted over CROSSFIT_FOLDS folds: a candidate's outputs on fold k
come from the same recipe calibrated on the other folds, so every calibration sample is
judged by an artifact that never saw it (all 32 of 32 samples judged, where holding a
quarter back judged 8), and the artifact that ships is calibrated on all of them.

Groups are dealt to folds in the order they first appear, one at a time, so data ordered
by source (photos of one style, then another) is spread over every fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np

from edgepack_runtime.intervals import group_index

__all__ = ["Split", "deal_folds", "EVAL_FOLDS", "CROSSFIT_FOLDS", "HALVES", "ALL", "CONFIRMATION"]

EVAL_FOLDS = 2
# Four folds: each cross-fitted artifact is calibrated on 3/4 of the samples, close to the
# shipped one's ranges, at the cost of four extra quantizations per candidate.
CROSSFIT_FOLDS = 4
HALVES = ("even", "odd")  # the folds each half holds: the two choices that confirm each other
ALL = "all"  # the choice that ships
CONFIRMATION = "confirmation"  # Accuracy.split of the pooled, crossed-over figures


@dataclass(frozen=True)
class Split:
    """The fold of every judged sample, and whether the judged samples are the calibration
    samples (cross-fitted) rather than separate ones."""

    folds: np.ndarray
    crossfit: bool
    groups: np.ndarray  # dense group number of each sample

    def indices(self, part: str) -> np.ndarray:
        """Sample indices of `part`: ALL, or one of HALVES (the even or the odd folds)."""
        if part == ALL:
            return np.arange(len(self.folds))
        return np.flatnonzero(self.folds % 2 == HALVES.index(part))

    def other(self, half: str) -> str:
        return HALVES[1 - HALVES.index(half)]

    def calibration_without(self, fold: int, samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Cross-fitting: the calibration samples outside `fold`."""
        keep = self.folds != fold
        return {k: v[keep] for k, v in samples.items()}

    def crossfitted(self, indices: np.ndarray, inputs: Mapping[str, np.ndarray],
                    run_fold: Callable[[int, dict], dict]) -> dict[str, np.ndarray]:
        """Outputs for the samples at `indices`, in that order, each fold's from
        `run_fold(fold, inputs)`: the artifact calibrated without that fold."""
        position = {int(i): p for p, i in enumerate(indices)}
        out: dict[str, np.ndarray] = {}
        for fold in np.unique(self.folds[indices]):
            rows = indices[self.folds[indices] == fold]
            at = [position[int(r)] for r in rows]
            for name, value in run_fold(int(fold), {k: v[rows] for k, v in inputs.items()}).items():
                if name not in out:
                    out[name] = np.empty((len(indices),) + value.shape[1:], value.dtype)
                out[name][at] = value
        return out


def deal_folds(groups: Optional[np.ndarray], count: int, crossfit: bool) -> Split:
    """Deal the groups of `count` judged samples to folds (groups None: each sample its own)."""
    index = group_index(groups, count)
    groups_count = int(index.max()) + 1 if count else 0
    folds = min(CROSSFIT_FOLDS if crossfit else EVAL_FOLDS, max(groups_count, 1))
    return Split(folds=index % folds, crossfit=crossfit, groups=index)
