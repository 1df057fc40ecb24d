"""classify: class scores, judged by top-1 agreement with PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..manifest import Postprocessing, TaskMetric
from ..task_fidelity import Floors, agreement_metric, cosine_metric
from .base import Ask, Outputs, Task, rms_errors

if TYPE_CHECKING:
    from ..postprocess import Prediction

TOP_K = 5


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    exp = np.exp(shifted)
    out: np.ndarray = exp / exp.sum()
    return out


class Classify(Task):
    """Top-1 agreement with PyTorch (the floor), top-5 containment (PyTorch's top-1 among the
    artifact's top 5) and the logits' cosine (reported). Candidates are ranked by the RMS
    error of the logits in units of the sample's logit spread: the noise on every class
    that could take the lead transfers to unseen images, the shift of a confident sample's
    margin does not (edgepack/closeness.py)."""

    name = "classify"
    answer_kind = "classes"
    class_scores = True
    help = "class scores: judged by top-1 agreement with PyTorch"

    def floor(self, metric: str, floors: Floors) -> Optional[float]:
        return floors.min_agreement if metric == "top1_agreement" else None

    def metrics(self, outputs: Outputs, reference: Outputs, floors: Floors, post: Optional[Postprocessing] = None,
                groups: Optional[np.ndarray] = None) -> tuple[TaskMetric, ...]:
        main = self.main(post, reference)
        out, ref = outputs[main], reference[main]
        n = len(ref)
        scores, truth = out.reshape(n, -1), ref.reshape(n, -1).argmax(axis=1)
        k = min(TOP_K, scores.shape[1])
        top_k = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return (
            agreement_metric("top1_agreement", scores.argmax(axis=1) == truth, groups,
                             self.floor("top1_agreement", floors)),
            agreement_metric(f"top{k}_agreement", np.any(top_k == truth[:, None], axis=1), groups, None),
            cosine_metric("cosine", out, ref, None, groups),
        )

    def sample_errors(self, outputs: Outputs, reference: Outputs, post: Optional[Postprocessing] = None
                      ) -> np.ndarray:
        main = self.main(post, reference)
        rms, ref = rms_errors(outputs[main], reference[main])
        errors: np.ndarray = rms / np.maximum(ref.std(axis=1), 1e-12)  # each sample's logit spread
        return errors

    def answer(self, post: Postprocessing, outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
               ask: Ask) -> "Prediction":
        from ..postprocess import Prediction

        out = outputs[post.output]
        value = (out[0] if out.ndim >= 2 else out).reshape(-1)  # the one sample's vector
        scores = _softmax(value) if post.softmax else value.astype(np.float64)
        k = min(ask.top_k or post.top_k, scores.size)
        best = np.argsort(-scores, kind="stable")[:k]
        names = labels if labels is not None else [str(i) for i in range(scores.size)]
        return Prediction(outputs=outputs, top=[(names[i], float(scores[i])) for i in best])
