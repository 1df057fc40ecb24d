"""What a model's outputs are for (manifest.TASKS), which decides the figures its artifacts
are judged by (edgepack_runtime.task_fidelity): asked with --task, else read from the
declared answers (--postprocess, --labels), else from the outputs' shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from edgepack_runtime.manifest import TASKS, DetectionSettings, Postprocessing, TensorSpec

from .errors import ModelSourceError

__all__ = ["TASKS", "infer_task", "Task"]

UNIT_NORM_SLACK = 1e-3  # float32 normalisation leaves norms within ~1e-6 of 1
_BY_POSTPROCESSING = {"classes": "classify", "embedding": "embed", "detections": "detect"}


@dataclass(frozen=True)
class Task:
    name: str  # one of TASKS
    output: Optional[str] = None  # the output the answer is read from (classify, embed, detect)
    detection: Optional[DetectionSettings] = None  # detect: how the output becomes boxes


def _check_detector(outputs: Sequence[TensorSpec]) -> TensorSpec:
    output = outputs[0]
    if len(outputs) != 1 or len(output.shape) != 3 or output.shape[0] != 1 or output.shape[1] < 5:
        shapes = ", ".join(str(list(s.shape)) for s in outputs)
        raise ModelSourceError(
            f"--task detect needs one output [1, 4 + classes, anchors] (Ultralytics' exported head: boxes cx, cy, w, "
            f"h in pixels, then class scores); this model returns {shapes}; put the head in export mode or pick "
            "another --task")
    return output


def _unit_rows(values: np.ndarray) -> bool:
    """Whether every sample's output has an L2 norm of 1: a normalised embedding (sentence
    transformers), which class scores never are (logits are not, probabilities sum to 1)."""
    norms = np.linalg.norm(values.reshape(len(values), -1).astype(np.float64), axis=1)
    return bool(len(norms)) and bool(np.allclose(norms, 1.0, atol=UNIT_NORM_SLACK))


def infer_task(requested: Optional[str], post: Optional[Postprocessing], outputs: Sequence[TensorSpec],
               reference: Mapping[str, np.ndarray]) -> Task:
    """The model's task. A single [N, C] float output (C > 1) is taken for class scores,
    unless PyTorch's outputs (`reference`, stacked) are unit vectors: an embedding.
    Anything unrecognised is "generic" (each output's cosine)."""
    if requested is not None and requested not in TASKS:
        raise ModelSourceError(f"--task {requested!r} is not one of {', '.join(TASKS)}")
    name = requested or (_BY_POSTPROCESSING[post.kind] if post is not None else None)
    if name is None:
        only = outputs[0] if len(outputs) == 1 else None
        if only is not None and len(only.shape) == 2 and only.shape[1] > 1 and np.dtype(only.dtype).kind == "f":
            name = "embed" if _unit_rows(reference[only.name]) else "classify"  # vectors
        else:
            name = "generic"
    if name == "detect":
        output = _check_detector(outputs)
        settings = post.detection if post is not None and post.detection is not None else DetectionSettings()
        return Task(name, output.name, settings)
    if name in ("classify", "embed"):
        return Task(name, post.output if post is not None else outputs[0].name)
    return Task(name)
