"""The accuracy budget: how much an artifact may lose vs PyTorch on data it was not
calibrated on. Torch-free, so the CLI can show its defaults without importing torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgepack_runtime.manifest import Accuracy

__all__ = ["Budget", "judge", "DEFAULT_MAX_ACCURACY_DROP", "DEFAULT_MIN_COSINE", "DEFAULT_MIN_AGREEMENT"]

DEFAULT_MAX_ACCURACY_DROP = 1.0  # top-1 points an artifact may lose vs PyTorch (eval labels)
DEFAULT_MIN_COSINE = 0.99  # mean cosine similarity to PyTorch's outputs an artifact must keep
DEFAULT_MIN_AGREEMENT = 0.0  # % top-1 agreement with PyTorch (class scores): off unless asked


@dataclass(frozen=True)
class Budget:
    """How much an artifact may lose vs PyTorch on data it was not calibrated on."""

    max_top1_drop: float  # top-1 points, when the eval data has labels
    min_cosine: float  # mean cosine similarity of the outputs, always
    min_agreement: float = 0.0  # % of samples with PyTorch's top-1, for class-score outputs

    def met(self, accuracy: Accuracy) -> bool:
        drop, agreement = accuracy.drop, accuracy.top1_agreement
        return (accuracy.cosine is not None and accuracy.cosine >= self.min_cosine
                and (drop is None or drop <= self.max_top1_drop)
                and (agreement is None or agreement >= self.min_agreement))


def judge(accuracy: Accuracy, budget: Budget) -> Accuracy:
    """`accuracy` with its verdict against `budget`."""
    return dataclasses.replace(accuracy, within_budget=budget.met(accuracy))
