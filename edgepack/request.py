"""What a build is asked to do, as typed objects: the CLI and `edgepack.build()` both make
a `BuildRequest` and hand it to `pipeline.build_from`. Torch-free, so the CLI can build
one before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from .budget import (
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_COSINE,
    DEFAULT_MIN_F1,
    DEFAULT_MIN_IOU,
)

if TYPE_CHECKING:
    import torch

__all__ = ["ModelRequest", "InputsRequest", "DataRequest", "BudgetRequest", "OutputRequest", "SigningRequest",
           "BuildRequest", "PREFERENCES"]

# Which int8 candidate within the budget a build ships (edgepack/search.py): the fastest that
# is as faithful as the most faithful within its noise, the most faithful, or the fastest.
PREFERENCES = ("balanced", "accuracy", "speed")

Samples = Union[Path, Mapping[str, Any], None]  # an .npz or folder path, or {input name: [N, ...] array}


@dataclass(frozen=True)
class ModelRequest:
    """The model: a torch.nn.Module, "FILE.py:FACTORY" or a checkpoint, with its weights."""

    model: Union[str, "torch.nn.Module"]
    weights: Optional[Path] = None
    trust_checkpoint: bool = False  # allow a full pickle as weights (it runs code)


@dataclass(frozen=True)
class InputsRequest:
    """The inputs (example tensors or --input specs) and the raw inputs and answers a bundle
    can carry (docs/raw-inputs.md)."""

    inputs: Union[Sequence[str], Mapping[str, Any]] = ()
    preprocess: Union[str, Path, Mapping[str, Any], None] = None
    tokenizer: Optional[Path] = None
    labels: Union[Path, tuple[str, ...], None] = None  # a file, or the names a self-describing source carries
    postprocess: Optional[str] = None


@dataclass(frozen=True)
class DataRequest:
    """Samples to calibrate on and to measure accuracy on (eval may hold integer `labels`)."""

    calibration: Samples = None
    eval_data: Samples = None


@dataclass(frozen=True)
class BudgetRequest:
    """How much an artifact may lose vs PyTorch, in the terms of the model's task (None:
    inferred, edgepack/task.py)."""

    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    min_cosine: float = DEFAULT_MIN_COSINE
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    min_f1: float = DEFAULT_MIN_F1
    task: Optional[str] = None
    prefer: str = "balanced"  # which int8 candidate within budget: balanced, accuracy or speed (search.py)
    min_iou: float = DEFAULT_MIN_IOU
    mask_threshold: Optional[float] = None  # task segment: the map's value a mask pixel exceeds


@dataclass(frozen=True)
class OutputRequest:
    """Where the bundle goes, and which misses still let it be written."""

    path: Path
    name: Optional[str] = None  # default: the directory's name
    allow_mismatch: bool = False  # write artifacts that miss their checks anyway
    allow_partial: bool = False  # leave out any artifact that fails, also of the precisions named
    strict: bool = False  # the profile's precisions must all ship too


@dataclass(frozen=True)
class SigningRequest:
    """Sign the finished bundle with this elliptic-curve private key (PEM)."""

    key: Path


@dataclass(frozen=True)
class BuildRequest:
    """One build: the model for `target`, in `formats` × `precisions` (None: the target's)."""

    model: ModelRequest
    output: OutputRequest
    target: str = "host"
    formats: Optional[Sequence[str]] = None
    precisions: Optional[Sequence[str]] = None
    inputs: InputsRequest = field(default_factory=InputsRequest)
    data: DataRequest = field(default_factory=DataRequest)
    budget: BudgetRequest = field(default_factory=BudgetRequest)
    signing: Optional[SigningRequest] = None
    verify_emulated: bool = False  # self-test (and integer accuracy) on the target's ISA under qemu

    @classmethod
    def of(cls, model, output, target: str = "host", *, formats=None, precisions=None, weights=None, inputs=(),
           calibration=None, eval_data=None, name=None, trust_checkpoint=False, allow_mismatch=False,
           allow_partial=False, verify_emulated=False, max_accuracy_drop=DEFAULT_MAX_ACCURACY_DROP,
           min_cosine=DEFAULT_MIN_COSINE, min_agreement=DEFAULT_MIN_AGREEMENT, min_f1=DEFAULT_MIN_F1, task=None,
           strict=False, preprocess=None, tokenizer=None, labels=None, postprocess=None,
           sign=None, prefer="balanced") -> "BuildRequest":
        """The request from the flat arguments of `edgepack.build` (and `edgepack build`'s options)."""
        return cls(
            model=ModelRequest(model, weights=weights, trust_checkpoint=trust_checkpoint),
            output=OutputRequest(Path(output), name=name, allow_mismatch=allow_mismatch,
                                 allow_partial=allow_partial, strict=strict),
            target=target, formats=formats, precisions=precisions,
            inputs=InputsRequest(inputs, preprocess=preprocess, tokenizer=tokenizer, labels=labels,
                                 postprocess=postprocess),
            data=DataRequest(calibration, eval_data),
            budget=BudgetRequest(max_accuracy_drop, min_cosine, min_agreement, min_f1, task, prefer),
            signing=SigningRequest(Path(sign)) if sign is not None else None,
            verify_emulated=verify_emulated,
        )
