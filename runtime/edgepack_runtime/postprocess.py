"""Outputs → answers, as the manifest declares and the bundle's task gives them (tasks/):
top-k (label, score) of a classifier, an embedding vector, a detector's boxes or a dense
model's mask, mapped back to the original image."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from .errors import BundleError, InputError
from .manifest import Postprocessing, TensorSpec

if TYPE_CHECKING:
    from .tasks import Ask

__all__ = ["Prediction", "Detection", "answer", "mask_dict", "mask_summary", "read_labels", "label_count",
           "check_thresholds", "THRESHOLD_NAMES"]

# A detection: (label, score, x1, y1, x2, y2), the box in the original image's pixels.
Detection = tuple[str, float, float, float, float, float]
THRESHOLD_NAMES = ("score_threshold", "iou_threshold")


@dataclass
class Prediction:
    """What `Model.predict` returns. `top`: the k best (label, score) of a classifier, best
    first; `embedding`: the output vector of an embedding model; `detections`: a detector's
    boxes as (label, score, x1, y1, x2, y2) in the original image's pixels, best first;
    `mask`: a dense model's mask over the original image's pixels (booleans, or each
    pixel's class index); `outputs`: every output as `run()` returns them. `preprocess_ms` / `inference_ms` /
    `postprocess_ms`: where the call's time went."""

    outputs: dict[str, np.ndarray]
    top: Optional[list[tuple[str, float]]] = None
    embedding: Optional[np.ndarray] = None
    detections: Optional[list[Detection]] = None
    mask: Optional[np.ndarray] = None
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the answer (top, embedding or detections; every output when there is
        none) and timings."""
        data: dict[str, Any] = {"preprocess_ms": round(self.preprocess_ms, 3),
                                "inference_ms": round(self.inference_ms, 3),
                                "postprocess_ms": round(self.postprocess_ms, 3)}
        if self.top is not None:
            data["top"] = [{"label": label, "score": score} for label, score in self.top]
        elif self.detections is not None:
            data["detections"] = [{"label": label, "score": score, "box": list(box)}
                                  for label, score, *box in self.detections]
        elif self.mask is not None:
            data["mask"] = mask_dict(self.mask)
        elif self.embedding is not None:
            data["embedding"] = self.embedding.tolist()
        else:
            data["outputs"] = {k: v.tolist() for k, v in self.outputs.items()}
        return data


def mask_dict(mask: np.ndarray) -> dict[str, Any]:
    """A mask as JSON: its shape, the share of foreground (non-zero) pixels, and run lengths
    of its values in row-major order (`values[i]` repeated `counts[i]` times)."""
    flat = mask.reshape(-1).astype(np.int64)
    starts = np.flatnonzero(np.diff(flat, prepend=flat[:1] - 1)) if flat.size else np.zeros(0, np.int64)
    counts = np.diff(np.append(starts, flat.size))
    return {"shape": list(mask.shape), "foreground": round(float(np.count_nonzero(flat)) / max(flat.size, 1), 6),
            "values": flat[starts].tolist(), "counts": counts.tolist()}


def mask_summary(mask: np.ndarray) -> str:
    """A mask in a few words: its size and how much of it is foreground (or which classes)."""
    height, width = mask.shape[:2]
    if mask.dtype == np.bool_:
        return f"mask {width}x{height}, {np.count_nonzero(mask) / max(mask.size, 1):.1%} foreground"
    return f"mask {width}x{height}, classes {', '.join(str(c) for c in np.unique(mask)[:8])}"


def read_labels(data: bytes, classes: int) -> list[str]:
    """labels.txt: one label per line, in class order, exactly `classes` of them."""
    try:
        labels = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise BundleError("the bundle's labels file is not UTF-8 text; rebuild the bundle") from None
    if len(labels) != classes:
        raise BundleError(f"the bundle's labels file has {len(labels)} lines for {classes} classes; rebuild the bundle")
    return labels


def label_count(post: Postprocessing, output: TensorSpec) -> int:
    """How many labels the bundle's labels file holds for `output` (its task says)."""
    from .tasks import answering

    return answering(post.kind).label_count(output)


def check_thresholds(post: Optional[Postprocessing], **thresholds: Optional[float]) -> None:
    """InputError unless every given threshold (score_threshold, iou_threshold) is a number
    in 0..1 and the bundle answers with detections."""
    given = {name: value for name, value in thresholds.items() if value is not None}
    if not given:
        return
    if post is None or post.detection is None:  # (the manifest's reader pairs detections with their settings)
        kind = "tensors" if post is None else post.kind
        raise InputError(f"{', '.join(given)} applies to detectors; this bundle answers with {kind}")
    for name, value in given.items():
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and 0 <= value <= 1):
            raise InputError(f"{name} must be a number from 0 to 1, not {str(value)[:40]!r}")


def answer(post: Optional[Postprocessing], outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
           ask: Optional["Ask"] = None) -> Prediction:
    """The Prediction for one sample's outputs, as the bundle's task answers (tasks/);
    `ask`: the call's overrides and the image's geometry."""
    from .tasks import Ask, answering

    if post is None:
        return Prediction(outputs=outputs)
    return answering(post.kind).answer(post, outputs, labels, ask or Ask())
