"""What every task is: the contract a registered Task fills in (tasks/__init__.py).

A task answers every question that depends on what a model's outputs are for: the figures
an artifact is judged by and their floors, the per-sample error the quantization search
ranks candidates by, what the parity checks compare, and the answer `Model.predict`
gives. Nothing outside a Task compares task names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import numpy as np

from ..manifest import Postprocessing, TaskMetric, TensorSpec
from ..task_fidelity import Floors

if TYPE_CHECKING:
    from ..letterbox import Geometry
    from ..postprocess import Prediction

__all__ = ["Ask", "Task", "rms_errors"]

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Ask:
    """What one `predict` call adds to the bundle's postprocessing: its overrides, and where
    the model input's pixels lie in the original image (None for tensors and texts)."""

    top_k: Optional[int] = None
    score_threshold: Optional[float] = None
    iou_threshold: Optional[float] = None
    geometry: Optional["Geometry"] = None
    input_hw: Optional[tuple[int, int]] = None  # the model input's height and width (images)


def rms_errors(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's root-mean-square error of `out` vs `ref` ([N, ...] each), and `ref`
    as [N, values] in float64 (for the spread the error is measured in)."""
    n = len(ref)
    flat = ref.reshape(n, -1).astype(np.float64)
    rms: np.ndarray = np.sqrt(((out.reshape(n, -1).astype(np.float64) - flat) ** 2).mean(axis=1))
    return rms, flat


class Task:
    """One kind of model output. Subclasses set the attributes and override `metrics`,
    `floor` and `sample_errors`; a task with an answer (`answer_kind`) overrides `answer`."""

    name: str  # as in the manifest and --task: "classify"
    answer_kind: Optional[str] = None  # the Postprocessing.kind its answers have ("classes"), None: tensors
    # The first ops after the answer output's last conv decode it (a detector's box
    # arithmetic): static int8 keeps them float (search.py, formats/tail.py).
    decode_tail_float: bool = False
    settings_field: Optional[str] = None  # the Postprocessing field holding its settings (manifest.ANSWER_SETTINGS)
    class_scores: bool = False  # the answer output holds class scores: a top-1 agreement means something
    draws: bool = False  # its answer can be drawn onto the image (run --annotate)
    help: str = ""  # one line for --task

    def main(self, post: Optional[Postprocessing], reference: Outputs) -> str:
        """The output the answer is read from: the postprocessing's, else the first."""
        return post.output if post is not None else next(iter(reference))

    def floor(self, metric: str, floors: Floors) -> Optional[float]:
        """The minimum figure `metric` must reach, or None when it is reported only."""
        return None

    def metrics(self, outputs: Outputs, reference: Outputs, floors: Floors, post: Optional[Postprocessing] = None,
                groups: Optional[np.ndarray] = None) -> tuple[TaskMetric, ...]:
        """The figures of stacked outputs ([N, ...] per name) vs PyTorch's, the floored one
        first. `groups`: one id per sample, the independent units intervals rest on."""
        raise NotImplementedError

    def sample_errors(self, outputs: Outputs, reference: Outputs, post: Optional[Postprocessing] = None
                      ) -> np.ndarray:
        """How far each sample's answer sits from PyTorch's on a continuous scale (lower is
        closer): what the search ranks candidates by (edgepack/closeness.py)."""
        raise NotImplementedError

    def comparable(self, outputs: Outputs, reference: Outputs, post: Optional[Postprocessing] = None
                   ) -> dict[str, np.ndarray]:
        """`outputs` as the parity checks compare them with `reference` (default: as they are)."""
        return dict(outputs)

    def output_problem(self, outputs: Sequence[TensorSpec]) -> Optional[str]:
        """Why a model with these outputs cannot have this task, or None."""
        return None

    def default_answer(self, outputs: Sequence[TensorSpec], threshold: Optional[float]) -> Optional[Postprocessing]:
        """The postprocessing a build declares for this task when the user declared none."""
        return None

    def label_count(self, output: TensorSpec) -> int:
        """How many labels the labels file holds for `output`."""
        return int(np.prod(output.shape[1:]))

    def answer(self, post: Postprocessing, outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
               ask: Ask) -> "Prediction":
        """The Prediction for one sample's outputs."""
        raise NotImplementedError(f"task {self.name} has no answer")
