"""ONNX: torch.onnx (dynamo) export and onnxruntime static int8 quantization."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from edgepack_runtime.manifest import TensorSpec

from ..errors import BuildError
from ..targets import TargetProfile
from .errors import root_cause

# The exporter logs a line for every torchvision op it cannot register; noise for a user.
logging.getLogger("torch.onnx").setLevel(logging.ERROR)


class _Reader:
    """Feeds calibration samples one at a time, as onnxruntime's calibrator expects."""

    def __init__(self, calibration: dict[str, np.ndarray]):
        self._count = len(next(iter(calibration.values())))
        self._data = calibration
        self._i = 0

    def get_next(self):
        if self._i >= self._count:
            return None
        feed = {name: values[self._i] for name, values in self._data.items()}
        self._i += 1
        return feed

    def rewind(self):
        self._i = 0


class OnnxFormat:
    name = "onnx"
    suffix = ".onnx"

    def export(self, module, inputs: tuple[TensorSpec, ...], output_names, target: TargetProfile, out: Path) -> None:
        args = tuple(torch.zeros(s.shape, dtype=getattr(torch, s.dtype)) for s in inputs)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    module, args, dynamo=True, opset_version=target.onnx.opset, verbose=False,
                    input_names=[s.name for s in inputs], output_names=output_names,
                )
        except Exception as exc:
            raise BuildError(
                f"torch.onnx.export failed: {root_cause(exc)} (rewrite that part of the model with "
                "ops ONNX supports, or leave the format out with --formats)"
            ) from None
        # One self-contained file: a bundle must not depend on a stray .onnx.data.
        program.save(str(out), external_data=False)

    def layout(self, target: TargetProfile) -> str | None:
        return None  # the export keeps PyTorch's layout

    def quantize(self, fp32: Path, out: Path, target: TargetProfile, precision: str, calibration) -> dict:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if precision != "int8":
            raise BuildError(f"ONNX has no {precision!r} precision here; use fp32 or int8")
        preset = target.onnx.int8
        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
        # Values were checked when the profile loaded (targets.PRESET_CHOICES).
        kwargs = dict(
            quant_format=formats[preset.quant_format],
            activation_type=types[preset.activation_type],
            weight_type=types[preset.weight_type],
            per_channel=preset.per_channel,
            reduce_range=preset.reduce_range,
            calibrate_method=methods[preset.calibrate_method],
        )
        with tempfile.TemporaryDirectory(prefix="edgepack-quant-") as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            try:
                # Shape inference and graph optimisation first, as onnxruntime recommends
                # before static quantization (better fusion, fewer unquantized ops).
                quant_pre_process(str(fp32), str(prepared))
                quantize_static(str(prepared), str(out), _Reader(calibration),
                                use_external_data_format=False, **kwargs)
            except Exception as exc:
                raise BuildError(f"onnxruntime quantization failed: {root_cause(exc)}") from None
        return {
            "tool": "onnxruntime.quantization.quantize_static",
            **dataclasses.asdict(preset),
        }

    def count_macs(self, fp32: Path) -> int | None:
        from ..macs import count_macs

        return count_macs(fp32)

    def toolchain(self) -> dict[str, str]:
        import onnxruntime
        import onnxscript

        return {"torch": torch.__version__, "onnx": onnx.__version__,
                "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}
