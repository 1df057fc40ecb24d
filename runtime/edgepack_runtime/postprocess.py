"""Outputs → answers, as the manifest declares: top-k (label, score) of a classifier, an
embedding vector, or a detector's boxes (decoded and NMS'd by detection.py, mapped back
to the original image)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .detection import detect
from .errors import BundleError, InputError
from .manifest import Postprocessing, TensorSpec

__all__ = ["Prediction", "Detection", "answer", "read_labels", "label_count", "check_thresholds", "THRESHOLD_NAMES"]

# A detection: (label, score, x1, y1, x2, y2), the box in the original image's pixels.
Detection = tuple[str, float, float, float, float, float]
BOX_COORDINATES = 4  # a "yolo" output's rows: cx, cy, w, h, then one row per class
THRESHOLD_NAMES = ("score_threshold", "iou_threshold")


@dataclass
class Prediction:
    """What `Model.predict` returns. `top`: the k best (label, score) of a classifier, best
    first; `embedding`: the output vector of an embedding model; `detections`: a detector's
    boxes as (label, score, x1, y1, x2, y2) in the original image's pixels, best first;
    `outputs`: every output as `run()` returns them. `preprocess_ms` / `inference_ms` /
    `postprocess_ms`: where the call's time went."""

    outputs: dict[str, np.ndarray]
    top: Optional[list[tuple[str, float]]] = None
    embedding: Optional[np.ndarray] = None
    detections: Optional[list[Detection]] = None
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
        elif self.embedding is not None:
            data["embedding"] = self.embedding.tolist()
        else:
            data["outputs"] = {k: v.tolist() for k, v in self.outputs.items()}
        return data


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
    """How many labels the bundle's labels file holds for `output`: one per class (a
    detector's classes are its output's rows after the box coordinates)."""
    if post.kind == "detections":
        return int(output.shape[1]) - BOX_COORDINATES
    return int(np.prod(output.shape[1:]))


def check_thresholds(post: Optional[Postprocessing], **thresholds: Optional[float]) -> None:
    """InputError unless every given threshold (score_threshold, iou_threshold) is a number
    in 0..1 and the bundle answers with detections."""
    given = {name: value for name, value in thresholds.items() if value is not None}
    if not given:
        return
    if post is None or post.kind != "detections":
        kind = "tensors" if post is None else post.kind
        raise InputError(f"{', '.join(given)} applies to detectors; this bundle answers with {kind}")
    for name, value in given.items():
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and 0 <= value <= 1):
            raise InputError(f"{name} must be a number from 0 to 1, not {str(value)[:40]!r}")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    exp = np.exp(shifted)
    out: np.ndarray = exp / exp.sum()
    return out


def answer(post: Optional[Postprocessing], outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
           top_k: Optional[int] = None, *, to_original: Optional[Callable[[np.ndarray], np.ndarray]] = None,
           score_threshold: Optional[float] = None, iou_threshold: Optional[float] = None) -> Prediction:
    """The Prediction for one sample's outputs. Detectors: `to_original` maps boxes [K, 4]
    from the model input's pixels to the original image's (a preprocessing Geometry's
    `to_original`; None keeps input pixels); the thresholds override the manifest's."""
    if post is None:
        return Prediction(outputs=outputs)
    out = outputs[post.output]
    if post.kind == "detections":
        return _detections(post, outputs, labels, to_original, score_threshold, iou_threshold)
    value = (out[0] if out.ndim >= 2 else out).reshape(-1)  # the one sample's vector
    if post.kind == "embedding":
        vector = value.astype(np.float32)
        if post.normalize:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return Prediction(outputs=outputs, embedding=vector)
    scores = _softmax(value) if post.softmax else value.astype(np.float64)
    k = min(top_k or post.top_k, scores.size)
    best = np.argsort(-scores, kind="stable")[:k]
    names = labels if labels is not None else [str(i) for i in range(scores.size)]
    return Prediction(outputs=outputs, top=[(names[i], float(scores[i])) for i in best])


def _detections(post: Postprocessing, outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
                to_original: Optional[Callable[[np.ndarray], np.ndarray]], score_threshold: Optional[float],
                iou_threshold: Optional[float]) -> Prediction:
    if post.detection is None:  # the manifest's reader refuses detections without their settings
        raise BundleError("the bundle's postprocessing answers detections without detection settings; rebuild it")
    found = detect(outputs[post.output], post.detection, score_threshold, iou_threshold)
    boxes = found.boxes if to_original is None or len(found) == 0 else to_original(found.boxes)
    detections: list[Detection] = []
    for c, score, box in zip(found.classes.tolist(), found.scores, boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        detections.append((labels[c] if labels is not None else str(c), float(score), x1, y1, x2, y2))
    return Prediction(outputs=outputs, detections=detections)
