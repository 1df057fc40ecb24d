"""The accuracy budget: how much an artifact may lose vs PyTorch on data it was not
calibrated on, in the terms of the model's task. Torch-free, so the CLI can show its
defaults without importing torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from edgepack_runtime.manifest import Accuracy, Postprocessing
from edgepack_runtime.parity import fidelity, top1_accuracy
from edgepack_runtime.task_fidelity import Floors
from edgepack_runtime.tasks import Task
from edgepack_runtime.tasks import task as task_named

__all__ = ["Budget", "judge", "measure", "DEFAULT_MAX_ACCURACY_DROP", "DEFAULT_MIN_COSINE", "DEFAULT_MIN_AGREEMENT",
           "DEFAULT_MIN_F1", "DEFAULT_MIN_IOU"]

DEFAULT_MAX_ACCURACY_DROP = 1.0  # top-1 points an artifact may lose vs PyTorch (eval labels)
DEFAULT_MIN_COSINE = 0.99  # mean cosine similarity to PyTorch's outputs (embeddings, generic outputs)
# % of samples whose top-1 class is PyTorch's (classifiers; --min-agreement). 85: the best
# int8 recipes keep 86-89 % of the real MobileNetV2's labels on photos it never saw (the
# plain static preset 62 %); below 85, more than one answer in seven changes.
DEFAULT_MIN_AGREEMENT = 85.0
# F1 of the detections after NMS vs PyTorch's (IoU 0.5, same class): 1 box in 20 missed or
# invented at most.
DEFAULT_MIN_F1 = 0.95
# Mean IoU of the masks vs PyTorch's (dense outputs): on a typical mask, one pixel in 20 of
# its area gained or lost at most.
DEFAULT_MIN_IOU = 0.95


@dataclass(frozen=True)
class Budget:
    """How much an artifact may lose vs PyTorch on data it was not calibrated on, judged
    by the figures of `task` (edgepack_runtime.task_fidelity): classifiers by top-1
    agreement, detectors by detection F1, embeddings and other outputs by cosine (each
    output tensor on its own)."""

    max_top1_drop: float  # top-1 points, when the eval data has labels
    min_cosine: float
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    min_f1: float = DEFAULT_MIN_F1
    min_iou: float = DEFAULT_MIN_IOU
    task: str = "generic"  # a registered task (edgepack_runtime.tasks)
    # What the task's answer is read from and its settings (the output, a detector's NMS
    # thresholds, a mask's threshold): the bundle's postprocessing.
    answer: Optional[Postprocessing] = None

    @property
    def judged_as(self) -> Task:
        return task_named(self.task)

    @property
    def floors(self) -> Floors:
        return Floors(min_cosine=self.min_cosine, min_agreement=self.min_agreement, min_f1=self.min_f1,
                      min_iou=self.min_iou)

    def met(self, accuracy: Accuracy) -> bool:
        """Whether `accuracy` is within the budget: each floored figure's value clears its
        floor (the figures come from samples that did not choose the artifact: holdout.py)."""
        drop = accuracy.drop
        if drop is not None and drop > self.max_top1_drop:
            return False
        if accuracy.metrics:
            return all(m.value >= m.floor for m in self._floored(accuracy.metrics) if m.floor is not None)
        return accuracy.cosine is not None and accuracy.cosine >= self.min_cosine

    def _floored(self, metrics):
        return tuple(dataclasses.replace(m, floor=self.judged_as.floor(m.name, self.floors)) for m in metrics)


def judge(accuracy: Accuracy, budget: Budget) -> Accuracy:
    """`accuracy` with its verdict against `budget` (and each figure with this budget's floor)."""
    return dataclasses.replace(accuracy, metrics=budget._floored(accuracy.metrics), within_budget=budget.met(accuracy))


def measure(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], budget: Budget, *,
            labels: Optional[np.ndarray], reference_top1: Optional[float], data: str, measured_on: str,
            indicative: bool, groups: Optional[np.ndarray] = None, split: Optional[str] = None) -> Accuracy:
    """An artifact's stacked outputs on the evaluation samples vs PyTorch's, in the task's
    figures and the whole-output ones, judged against `budget` (the build host and the
    emulated target share this). `groups`: the samples' group ids (intervals rest on them);
    `split`: which part of the judged samples these are (holdout.py)."""
    overall = fidelity(outputs, reference)
    judged = budget.judged_as
    first = outputs[judged.main(budget.answer, reference)]
    accuracy = Accuracy(
        samples=overall.samples, indicative=indicative,
        top1=top1_accuracy(first, labels) if labels is not None else None, reference_top1=reference_top1,
        cosine=overall.cosine, cosine_min=overall.cosine_min, sqnr_db=overall.sqnr_db,
        top1_agreement=overall.top1_agreement if judged.class_scores else None,
        data=data, measured_on=measured_on,
        metrics=judged.metrics(outputs, reference, budget.floors, budget.answer, groups),
        split=split, groups=len(np.unique(groups)) if groups is not None else overall.samples,
    )
    return judge(accuracy, budget)
