"""embed and generic: outputs judged by their cosine to PyTorch's, each tensor on its own
(one cosine over tensors of different scales would let a large one hide a destroyed one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..manifest import Postprocessing, TaskMetric
from ..task_fidelity import Floors, cosine_metric, sample_cosines
from .base import Ask, Outputs, Task

if TYPE_CHECKING:
    from ..postprocess import Prediction


class Generic(Task):
    """Anything else: the cosine of each output (each a floor). Candidates are ranked by
    1 - the cosine of the sample's worst output."""

    name = "generic"
    help = "any outputs: each tensor's cosine to PyTorch's"

    def judged(self, post: Optional[Postprocessing], reference: Outputs) -> list[str]:
        return list(reference)

    def floor(self, metric: str, floors: Floors) -> Optional[float]:
        return floors.min_cosine if metric.startswith("cosine") else None

    def metrics(self, outputs: Outputs, reference: Outputs, floors: Floors, post: Optional[Postprocessing] = None,
                groups: Optional[np.ndarray] = None) -> tuple[TaskMetric, ...]:
        names = self.judged(post, reference)
        if len(names) == 1:
            return (cosine_metric("cosine", outputs[names[0]], reference[names[0]], self.floor("cosine", floors),
                                  groups),)
        return tuple(cosine_metric(f"cosine:{n}", outputs[n], reference[n], self.floor(f"cosine:{n}", floors), groups)
                     for n in names)

    def sample_errors(self, outputs: Outputs, reference: Outputs, post: Optional[Postprocessing] = None
                      ) -> np.ndarray:
        errors: np.ndarray = np.max([1 - sample_cosines(outputs[n], reference[n])
                                     for n in self.judged(post, reference)], axis=0)
        return errors


class Embed(Generic):
    """An embedding: the cosine of the answer output (the floor)."""

    name = "embed"
    answer_kind = "embedding"
    help = "an embedding: judged by its cosine to PyTorch's"

    def judged(self, post: Optional[Postprocessing], reference: Outputs) -> list[str]:
        return [self.main(post, reference)]

    def answer(self, post: Postprocessing, outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
               ask: Ask) -> "Prediction":
        from ..postprocess import Prediction

        out = outputs[post.output]
        vector = (out[0] if out.ndim >= 2 else out).reshape(-1).astype(np.float32)
        if post.normalize:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return Prediction(outputs=outputs, embedding=vector)
