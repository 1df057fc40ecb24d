"""One module per artifact format behind a small protocol; the build knows only this."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from edgepack_runtime.manifest import TensorSpec

from ..targets import TargetProfile

__all__ = ["ExportFormat", "get_format"]


class ExportFormat(Protocol):
    name: str  # as in the manifest and the target profile: "onnx"
    suffix: str  # file suffix: ".onnx"
    precisions: tuple[str, ...]  # all it can build; a target profile's list is the default set

    def export(self, module: torch.nn.Module, inputs: tuple[TensorSpec, ...],
               output_names: list[str], target: TargetProfile, out: Path) -> None:
        """Write the fp32 artifact of `module` to `out` as one self-contained file."""

    def layout(self, target: TargetProfile) -> str | None:
        """"nhwc" when the artifact takes 4-D tensors channels-last, None when as PyTorch."""

    def recipes(self, target: TargetProfile, precision: str) -> list[dict]:
        """The quantization recipes to try for `precision`, the target's preset first."""

    def quantize(self, fp32: Path, out: Path, target: TargetProfile, precision: str,
                 calibration: dict[str, np.ndarray], recipe: dict) -> dict:
        """Write the `precision` artifact derived from `fp32` to `out` with `recipe` (one of
        `recipes()`, possibly with `float_layers` to keep in float); static int8 is calibrated
        on `calibration` ([N, *shape] per input, fed one sample at a time). Returns the
        settings used, for the manifest.

        A format that can rank layers for mixed precision also has
        `sensitive_layers(fp32, quantized, calibration, target) -> list[list[str]]` (most sensitive
        first; each entry the layer names to keep in float together)."""

    def count_macs(self, fp32: Path) -> int | None:
        """Multiply-accumulates per inference of the fp32 artifact, if this format can count them."""

    def toolchain(self) -> dict[str, str]:
        """Versions of the libraries this format's export and quantization used."""


def get_format(name: str) -> ExportFormat:
    # Imported on demand: the tflite module's converter stack is heavy and optional.
    if name == "onnx":
        from .onnx import OnnxFormat

        return OnnxFormat()
    if name == "tflite":
        from .tflite import TfliteFormat

        return TfliteFormat()
    raise KeyError(name)
