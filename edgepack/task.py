"""What a model's outputs are for (edgepack_runtime.tasks), which decides the figures its
artifacts are judged by: asked with --task, else read from the declared answers
(--postprocess, --labels), else from the outputs' shapes."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from edgepack_runtime.errors import UsageError
from edgepack_runtime.manifest import Postprocessing, TensorSpec
from edgepack_runtime.tasks import Task, answering, task

from .errors import ModelSourceError

__all__ = ["infer_task", "ModelTask"]

log = logging.getLogger(__name__)

UNIT_NORM_SLACK = 1e-3  # float32 normalisation leaves norms within ~1e-6 of 1
MIN_MAP_SIDE = 8  # a one-channel output this wide and tall, of values in 0..1, is taken for a mask


@dataclass(frozen=True)
class ModelTask:
    """The model's task and what its answer is read from (output and settings: the
    bundle's postprocessing, None when it answers with tensors)."""

    kind: Task
    answer: Optional[Postprocessing] = None

    @property
    def name(self) -> str:
        return self.kind.name


def _unit_rows(values: np.ndarray) -> bool:
    """Whether every sample's output has an L2 norm of 1: a normalised embedding (sentence
    transformers), which class scores never are (logits are not, probabilities sum to 1)."""
    norms = np.linalg.norm(values.reshape(len(values), -1).astype(np.float64), axis=1)
    return bool(len(norms)) and bool(np.allclose(norms, 1.0, atol=UNIT_NORM_SLACK))


def _probabilities(values: np.ndarray) -> bool:
    return bool(values.size) and float(values.min()) >= 0.0 and float(values.max()) <= 1.0


def _is_probability_map(spec: TensorSpec, values: np.ndarray) -> bool:
    shape = spec.shape
    return (len(shape) == 4 and shape[1] == 1 and min(shape[2:]) >= MIN_MAP_SIDE
            and np.dtype(spec.dtype).kind == "f" and _probabilities(values))


def _guess(outputs: Sequence[TensorSpec], reference: Mapping[str, np.ndarray]) -> Task:
    """A single [N, C] float output (C > 1) is taken for class scores, unless PyTorch's
    outputs (`reference`, stacked) are unit vectors: an embedding. Outputs that are all
    one-channel maps [N, 1, H, W] of probabilities are masks (saliency, foreground; several:
    a deeply supervised net's side outputs, the first the answer, as U^2-Net's d0).
    Anything else, depth maps and features included, is generic: judged by its cosine."""
    only = outputs[0] if len(outputs) == 1 else None
    if only is not None and np.dtype(only.dtype).kind == "f" and len(only.shape) == 2 and only.shape[1] > 1:
        return task("embed") if _unit_rows(reference[only.name]) else task("classify")
    if all(_is_probability_map(spec, reference[spec.name]) for spec in outputs):
        log.warning(f"{outputs[0].name!r} is a one-channel map of values in 0..1: judged as a mask (--task segment, "
                    "its IoU at --mask-threshold 0.5); pass --task generic to judge the values by cosine")
        return task("segment")
    return task("generic")


def infer_task(requested: Optional[str], post: Optional[Postprocessing], outputs: Sequence[TensorSpec],
               reference: Mapping[str, np.ndarray], mask_threshold: Optional[float] = None) -> ModelTask:
    """The model's task: `requested` (--task), else the one the declared answers belong to,
    else a guess from the outputs. `mask_threshold`: a dense model's (--mask-threshold)."""
    try:
        kind = task(requested) if requested is not None else answering(post.kind) if post is not None else None
    except UsageError as exc:
        raise ModelSourceError(f"--task: {exc}") from exc
    if kind is None:
        kind = _guess(outputs, reference)
    problem = kind.output_problem(outputs)
    if problem is not None:
        raise ModelSourceError(problem)
    if post is not None and kind.answer_kind is not None and post.kind != kind.answer_kind:
        raise ModelSourceError(f"--task {kind.name} answers with {kind.answer_kind or 'tensors'}, not with the "
                               f"declared {post.kind}; drop --postprocess/--labels or pick another --task")
    if post is None:
        post = kind.default_answer(outputs, mask_threshold)
    if mask_threshold is not None and not math.isfinite(mask_threshold):
        raise ModelSourceError(f"--mask-threshold must be a finite number, not {mask_threshold}")
    if mask_threshold is not None and kind.settings_field != "mask":
        raise ModelSourceError(f"--mask-threshold applies to dense outputs (--task segment), not to {kind.name}")
    return ModelTask(kind, post)
