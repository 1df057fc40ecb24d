"""Precisions as one registered type, shared by the runtime and the packager.

Every question about a precision (does it run integer kernels, are its activation
ranges calibrated or computed at run time, what are its weights stored as, how far may it
stray from PyTorch) is answered here, never by comparing its name: adding a precision is
registering one more `Precision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import UsageError
from .typed import did_you_mean

__all__ = ["Tolerance", "Precision", "PRECISIONS", "BASE", "register_precision", "precision", "is_integer",
           "is_calibrated", "is_quantized"]


@dataclass(frozen=True)
class Tolerance:
    """How far an artifact's outputs may stray from PyTorch's on the golden samples."""

    floor: float  # absolute: only matters for outputs whose range is ~0
    range_fraction: float  # of max(ref) − min(ref)
    min_cosine: float  # on the golden samples: a broken graph, not a budget


@dataclass(frozen=True)
class Precision:
    """One precision an artifact can be built in."""

    name: str  # as in the manifest and the target profile: "int8"
    integer: bool  # runs integer kernels: its numbers depend on the ISA that runs them
    calibrated: bool  # activation ranges calibrated on real data (the golden samples it is checked on)
    tolerance: Tolerance
    # The target profile's preset (a format table's sub-table) naming the ISA features its
    # kernels rely on (`relies_on`); None: the architecture alone decides.
    relies_on: Optional[str] = None
    # What its weights are stored as (numpy's name): "float16" halves the file, compute stays float.
    weights: str = "float32"

    @property
    def quantized(self) -> bool:
        """Its error is quantization's, not rounding's: judged by the accuracy budget."""
        return self.integer

    @property
    def dynamic(self) -> bool:
        """Integer kernels whose activations are quantized at run time, from each input's own
        range: no calibration (onnxruntime's quantize_dynamic, TFLite's dynamic range)."""
        return self.integer and not self.calibrated


# fp32 differs from PyTorch only by kernel summation order; fp16 weights carry ~3
# significant digits. int8 keeps ~256 levels per tensor, and the recipes that keep it
# accurate clip rare outliers on purpose (percentile calibration, moving-average ranges):
# one clipped logit can be off by a third of the range while the cosine stays above 0.99
# (MobileNetV2 example). So the golden check only catches broken graphs and presets;
# whether a quantized artifact is accurate enough is the budget's call (eval data, Budget).
_INT8_TOLERANCE = Tolerance(1e-6, 0.5, 0.95)
PRECISIONS: dict[str, Precision] = {}
BASE = "fp32"  # every format exports this one; the others derive from its file


def register_precision(p: Precision) -> Precision:
    """Add a precision (a later one of the same name replaces it)."""
    PRECISIONS[p.name] = p
    return p


for _p in (
    Precision("fp32", integer=False, calibrated=False, tolerance=Tolerance(1e-6, 1e-4, 0.9999)),
    Precision("fp16", integer=False, calibrated=False, tolerance=Tolerance(1e-6, 1e-2, 0.999), weights="float16"),
    Precision("int8", integer=True, calibrated=True, tolerance=_INT8_TOLERANCE, relies_on="int8", weights="int8"),
    Precision("dynamic-int8", integer=True, calibrated=False, tolerance=_INT8_TOLERANCE, relies_on="int8",
              weights="int8"),
):
    register_precision(_p)


def precision(name: str) -> Precision:
    """The registered precision called `name`."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise UsageError(f"unknown precision {name!r}; {did_you_mean(name, PRECISIONS)}"
                         f"known: {', '.join(PRECISIONS)}") from None


def is_integer(name: str) -> bool:
    """Whether `name` runs integer kernels (unknown names: no)."""
    p = PRECISIONS.get(name)
    return p is not None and p.integer


def is_calibrated(name: str) -> bool:
    """Whether `name`'s activation ranges are calibrated on real data (unknown names: no)."""
    p = PRECISIONS.get(name)
    return p is not None and p.calibrated


def is_quantized(name: str) -> bool:
    """Whether `name`'s error is quantization's, judged by the accuracy budget (unknown: no)."""
    p = PRECISIONS.get(name)
    return p is not None and p.quantized
