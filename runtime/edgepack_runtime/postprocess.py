"""Outputs → answers, as the manifest declares: top-k (label, score) of a classifier, or
an embedding vector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import BundleError
from .manifest import Postprocessing

__all__ = ["Prediction", "answer", "read_labels"]


@dataclass
class Prediction:
    """What `Model.predict` returns. `top`: the k best (label, score) of a classifier, best
    first; `embedding`: the output vector of an embedding model; `outputs`: every output
    as `run()` returns them. `preprocess_ms` / `inference_ms`: where the call's time went."""

    outputs: dict[str, np.ndarray]
    top: Optional[list[tuple[str, float]]] = None
    embedding: Optional[np.ndarray] = None
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready: the answer (top or embedding; every output when there is neither) and timings."""
        data: dict = {"preprocess_ms": round(self.preprocess_ms, 3), "inference_ms": round(self.inference_ms, 3)}
        if self.top is not None:
            data["top"] = [{"label": label, "score": score} for label, score in self.top]
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


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    exp = np.exp(shifted)
    return exp / exp.sum()


def answer(post: Optional[Postprocessing], outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
           top_k: Optional[int] = None) -> Prediction:
    """The Prediction for one sample's outputs."""
    if post is None:
        return Prediction(outputs=outputs)
    out = outputs[post.output]
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
