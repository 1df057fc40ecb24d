"""ncnn: the model traced to TorchScript and converted by pnnx to ncnn's `.param` graph and
`.bin` weights, plus the `.ncnn.json` of runtime options the build chose (fp16 or not).

An artifact is three files, named after the `.param` (`companions`): the build hashes all of
them and the runtime checks every one at load. pnnx (PyPI) takes TorchScript only (the
20261020 wheel refuses a `torch.export` program and asks for `torch.jit.trace`), so the
module is traced here at batch 1: ncnn has no batch axis, its runtime backend runs a batch
one sample at a time.

Precisions (docs/extending.md, "ncnn"):
- fp32: fp32 weights, and the runtime turns ncnn's fp16 storage/arithmetic off, so an fp32
  artifact computes in fp32 on every CPU. (ncnn's defaults would run fp16 arithmetic on a
  Pi 5 silently: not what was validated.)
- fp16: pnnx's fp16 weights (half the `.bin`) and the runtime turns fp16 storage and
  packing on (weights and activations in fp16, fp32 arithmetic); fp16 arithmetic too
  (ARMv8.2 asimdhp) only where the profile says `fp16_arithmetic = true`: on an emulated
  Cortex-A76 it kept 93.75 % top-1 agreement on MobileNetV2, under the 95 % floor.
- int8: not built. ncnn's int8 needs ncnn2table (calibration table) and ncnn2int8, C++
  tools that no PyPI wheel ships (neither `ncnn` nor `pnnx`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgepack_runtime.backends.ncnn import import_ncnn, options_path, weights_path
from edgepack_runtime.manifest import TensorSpec
from edgepack_runtime.precision import Precision
from edgepack_runtime.subprocesses import run_checked

from ..errors import BuildError
from . import MULTI_FILE, ExportFormat
from .contract import Exported, QuantPlan, QuantResult, Recipe
from .errors import root_cause
from .output import converter_output

if TYPE_CHECKING:  # torch and pnnx are imported where used: `edgepack targets` reads this module
    from ..targets import TargetProfile

__all__ = ["NcnnFormat", "NcnnSettings", "PNNX_TIMEOUT_S"]

NAME = "ncnn"
EXTRA_HINT = "pip install 'edgepack[ncnn]' (or run `make setup`)"
PNNX_TIMEOUT_S = 900  # pnnx on a MobileNetV2 takes seconds; a hung conversion ends as an error
# pnnx's ncnn files are what we ship; its other outputs (its own graph, a Python model, an
# ONNX copy) are written to the scratch directory and dropped.
SCRATCH_OUTPUTS = {"pnnxparam": "model.pnnx.param", "pnnxbin": "model.pnnx.bin", "pnnxpy": "model_pnnx.py",
                   "pnnxonnx": "model.pnnx.onnx", "ncnnpy": "model_ncnn.py"}
# ncnn's blobs are float: integer inputs (token ids) have no way in from Python.
FLOAT_DTYPES = ("float32",)
INT8_UNAVAILABLE = ("ncnn int8 needs ncnn2table and ncnn2int8, which no PyPI wheel ships (not ncnn, not pnnx); "
                    "build ncnn fp32/fp16, or int8 with --formats onnx,tflite")


@dataclass(frozen=True)
class NcnnSettings:
    """A target profile's [ncnn] table."""

    precisions: tuple[str, ...]
    # ncnn's light mode: an intermediate blob is freed as soon as its last reader ran (lower
    # peak memory, same speed); the runtime reads it from the artifact's options file.
    lightmode: bool = True
    # fp16 artifacts: compute in fp16 too where the CPU can (ARMv8.2 asimdhp), not only
    # store in fp16. Off unless a profile measured that it keeps the accuracy budget.
    fp16_arithmetic: bool = False

    def check(self, where: str) -> None:
        pass  # its precisions are checked against NcnnFormat.precisions by the profile loader


@dataclass(frozen=True)
class _Traced:
    """An export's state: the folder holding the traced TorchScript, and pnnx's shape arguments."""

    scratch: tempfile.TemporaryDirectory
    shape_args: list[str]


def _pnnx():
    try:
        import pnnx
    except ImportError as exc:
        raise BuildError(f"ncnn export needs pnnx, which is not installed ({exc}); {EXTRA_HINT}") from exc
    return pnnx


def _shape_arg(shapes: list[tuple[int, ...]]) -> str:
    """pnnx's inputshape syntax: `[1,3,224,224]f32,[1,8]f32`."""
    return ",".join("[" + ",".join(str(n) for n in shape) + "]f32" for shape in shapes)


def _traced_shapes(inputs: tuple[TensorSpec, ...]) -> tuple[list, list | None]:
    """The input shapes to trace at (batch 1: ncnn has no batch axis) and a second set with
    every other dynamic dim at another size of its range, which is how pnnx learns those
    dims are dynamic (None when there are none)."""
    first = [(1, *s.shape[1:]) for s in inputs]
    other = {d.name: (d.max if d.max != s.shape[d.axis] else d.min) for s in inputs for d in s.dynamic if d.axis}
    if not any(other[d.name] != s.shape[d.axis] for s in inputs for d in s.dynamic if d.axis):
        return first, None
    return first, [(1, *s.shape_at(other)[1:]) for s in inputs]


def _unknown_layers(param: Path) -> list[str]:
    """Layer types in a `.param` that this ncnn cannot create: pnnx leaves ops it cannot
    convert under their PyTorch names, and ncnn only fails on them at load."""
    try:
        ncnn = import_ncnn()
    except ImportError:
        return []  # validation through the runtime backend reports the missing library
    lines = param.read_text().splitlines()[2:]  # magic, then layer and blob counts
    kinds = {line.split()[0] for line in lines if line.strip()}
    return sorted(k for k in kinds if ncnn.layer_to_index(k) < 0)


def _settings(target: "TargetProfile") -> NcnnSettings:
    """The profile's [ncnn] table; the defaults for a profile without one (ncnn asked for by --formats)."""
    return target.settings(NAME) or NcnnSettings(precisions=("fp32",))


class NcnnFormat(ExportFormat):
    """The ncnn format: pnnx export, fp32 and fp16, three files per artifact."""

    name = NAME
    suffix = ".param"
    precisions = ("fp32", "fp16")
    settings_class = NcnnSettings
    runtime_extra = "ncnn"
    # ncnn's aarch64 wheel (4.9 MB) for --verify-emulated, its version as the build host's.
    emulation_wheels = ("ncnn==1.0.20261020",)
    capabilities = frozenset({MULTI_FILE})

    def companions(self, path: Path) -> list[Path]:
        """`model.fp16.param` -> `model.fp16.bin` (weights), `model.fp16.ncnn.json` (options)."""
        return [weights_path(path), options_path(path)]

    def export_key(self, target: "TargetProfile") -> object:
        return _settings(target).lightmode  # what the fp32 export's options say of the profile

    def layout(self, target: "TargetProfile") -> str | None:
        return None  # ncnn takes NCHW (its Mat is CHW, one sample at a time) as PyTorch does

    def export(self, module, inputs: tuple[TensorSpec, ...], output_names, target: "TargetProfile",
               out: Path) -> Exported:
        pnnx = _pnnx()
        import torch

        kinds = [f"{s.name} ({s.dtype})" for s in inputs if s.dtype not in FLOAT_DTYPES]
        if kinds:
            raise BuildError(f"ncnn takes float32 inputs only, not {', '.join(kinds)}; "
                             "leave ncnn out with --formats onnx,tflite")
        first, second = _traced_shapes(inputs)
        scratch = tempfile.TemporaryDirectory(prefix="edgepack-ncnn-")
        traced = Path(scratch.name) / "model.pt"
        try:
            with converter_output(), torch.no_grad():
                args = tuple(torch.zeros(shape) for shape in first)
                torch.jit.trace(module.eval(), args, check_trace=False).save(str(traced))
        except Exception as exc:
            scratch.cleanup()
            raise BuildError(f"torch.jit.trace (pnnx's input) failed: {root_cause(exc)}; make forward() "
                             "traceable, or leave ncnn out with --formats onnx,tflite") from exc
        shape_args = [f"inputshape={_shape_arg(first)}"] + ([f"inputshape2={_shape_arg(second)}"] if second else [])
        self._convert(pnnx, traced, shape_args, out, fp16=False)
        self._write_options(out, target, fp16=False)
        # No op graph: ncnn builds no calibrated precision, so nothing is ever kept float.
        # The state is the traced TorchScript (its folder lives as long as the Exported) and
        # pnnx's shape arguments: fp16 is pnnx's own weight conversion of the same TorchScript.
        return Exported(out, state=_Traced(scratch, shape_args))

    def _convert(self, pnnx, traced: Path, shape_args: list[str], out: Path, fp16: bool) -> None:
        scratch = traced.parent
        argv = [pnnx.EXEC_PATH, str(traced), *shape_args, f"fp16={int(fp16)}", "device=cpu",
                f"ncnnparam={out}", f"ncnnbin={weights_path(out)}",
                *(f"{key}={scratch / name}" for key, name in SCRATCH_OUTPUTS.items())]
        fix = "leave ncnn out with --formats onnx,tflite, or run `edgepack -vv` to see pnnx's output"
        run_checked(argv, "pnnx", fix, timeout=PNNX_TIMEOUT_S, error=BuildError, cwd=scratch)
        if not (out.is_file() and weights_path(out).is_file()):
            raise BuildError(f"pnnx wrote no ncnn files for this model; {fix}")
        unknown = _unknown_layers(out)
        if unknown:
            raise BuildError(f"pnnx left ops ncnn cannot run: {', '.join(unknown)}; replace them in the model, "
                             "or leave ncnn out with --formats onnx,tflite")

    def _write_options(self, out: Path, target: "TargetProfile", fp16: bool) -> None:
        settings = _settings(target)
        options = {"fp16": fp16, "fp16_arithmetic": fp16 and settings.fp16_arithmetic,
                   "lightmode": settings.lightmode}
        options_path(out).write_text(json.dumps(options, indent=2, sort_keys=True) + "\n")

    def recipes(self, target: "TargetProfile", precision: Precision) -> list[Recipe]:
        # fp16 has one knob, the profile's; int8 is not built (module docstring). Targets
        # whose recipes are equal share the fp16 artifact (shared_work.py).
        return [Recipe(fp16_arithmetic=_settings(target).fp16_arithmetic)]

    def quantize(self, exported: Exported, out: Path, target: "TargetProfile", plan: QuantPlan,
                 calibration: dict[str, np.ndarray]) -> QuantResult:
        precision = plan.precision
        if precision.integer:
            raise BuildError(INT8_UNAVAILABLE)
        if precision.weights != "float16":
            raise BuildError(f"ncnn has no {precision.name!r} precision; use {', '.join(self.precisions)}")
        traced = exported.state
        if not isinstance(traced, _Traced):
            raise BuildError(f"{exported.path} was not exported by NcnnFormat.export(); ncnn fp16 is converted from "
                             "the traced model: rebuild the bundle")
        self._convert(_pnnx(), Path(traced.scratch.name) / "model.pt", traced.shape_args, out, fp16=True)
        self._write_options(out, target, fp16=True)
        # plan.recipe already says fp16_arithmetic (recipes())
        return QuantResult("pnnx", Recipe(plan.recipe, weights="fp16", fp16_storage=True))

    def toolchain(self) -> dict[str, str]:
        versions = {}
        for dist in ("pnnx", "ncnn"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return versions
