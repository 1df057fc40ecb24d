"""Artifact formats as plugins: one module per format registers itself, and the build,
the target profiles, remote deploy and emulation read this registry (docs/extending.md).

Built-in formats are listed here (so edgepack run from its source tree has them);
plugins register through the entry point group `edgepack.formats` or in-process with
`register()`. Format modules stay light at import (no torch, no converter): `edgepack
targets` reads them.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgepack_runtime.manifest import TensorSpec

from ..errors import TargetError, did_you_mean

if TYPE_CHECKING:
    import torch

    from ..targets import TargetProfile

__all__ = ["ExportFormat", "get_format", "formats", "register", "check_recipes", "artifact_files", "move_artifact",
           "remove_artifact", "ENTRY_POINTS"]

ENTRY_POINTS = "edgepack.formats"


class ExportFormat(Protocol):
    name: str  # as in the manifest and the target profile: "onnx"
    suffix: str  # file suffix: ".onnx"
    precisions: tuple[str, ...]  # all it can build; a target profile's list is the default set
    # The profile's [name] table as a frozen dataclass (nested tables as dataclass fields,
    # lists as tuples) with a `check(where)` that raises TargetError on values it does not allow.
    settings_class: type
    runtime_extra: str  # the edgepack-runtime extra whose backend runs it: pip install edgepack-runtime[extra]
    emulation_wheels: tuple[str, ...]  # pinned aarch64 wheels of that backend, for --verify-emulated

    def export(self, module: "torch.nn.Module", inputs: tuple[TensorSpec, ...],
               output_names: list[str], target: "TargetProfile", out: Path) -> None:
        """Write the fp32 artifact of `module` to `out` as one self-contained file."""

    def layout(self, target: "TargetProfile") -> str | None:
        """"nhwc" when the artifact takes 4-D tensors channels-last, None when as PyTorch."""

    def recipes(self, target: "TargetProfile", precision: str) -> list[dict]:
        """The quantization recipes to try for `precision`, the target's preset first."""

    def quantize(self, fp32: Path, out: Path, target: "TargetProfile", precision: str,
                 calibration: dict[str, np.ndarray], recipe: dict) -> dict:
        """Write the `precision` artifact derived from `fp32` to `out` with `recipe` (one of
        `recipes()`, possibly with `float_layers` to keep in float); static int8 is calibrated
        on `calibration` ([N, *shape] per input, fed one sample at a time). Returns the
        settings used, for the manifest.

        A format that can rank layers for mixed precision also has
        `sensitive_layers(fp32, quantized, calibration, target) -> list[list[str]]` (most sensitive
        first; each entry the layer names to keep in float together)."""

    def toolchain(self) -> dict[str, str]:
        """Versions of the libraries this format's export and quantization used.

        A format whose artifacts are several files also has `companions(path) -> list[Path]`:
        the files that go with the one at `path` (next to it, named after it)."""


BUILTIN = {"onnx": "edgepack.formats.onnx:OnnxFormat", "tflite": "edgepack.formats.tflite:TfliteFormat",
           "ncnn": "edgepack.formats.ncnn:NcnnFormat"}
_registry: dict[str, ExportFormat] = {}
_loaded = False


def register(fmt: ExportFormat) -> ExportFormat:
    """Add a format (an instance) to the registry; a later one of the same name replaces it."""
    _registry[fmt.name] = fmt
    return fmt


def formats() -> dict[str, ExportFormat]:
    """Every registered format by name: the entry points, loaded once, and `register()`ed ones."""
    global _loaded
    if not _loaded:
        _loaded = True
        builtin = [EntryPoint(name, ref, ENTRY_POINTS) for name, ref in BUILTIN.items()]
        plugins = sorted(entry_points(group=ENTRY_POINTS), key=lambda p: p.name)
        for point in builtin + [p for p in plugins if p.name not in BUILTIN]:
            if point.name not in _registry:  # in-process registrations win
                loaded = point.load()
                register(loaded() if isinstance(loaded, type) else loaded)
    return _registry


def get_format(name: str) -> ExportFormat:
    return formats()[name]


def check_recipes(int8, choices: dict, where: str) -> None:
    """Every recipe of an int8 preset (the preset and its `search` entries) names known
    fields with allowed values; shared by the formats whose presets have a `search`."""
    recipes = int8.recipes()
    fields = {f.name for f in dataclasses.fields(int8)}
    for i, recipe in enumerate(recipes):
        place = f"{where}.int8" + (f".search[{i - 1}]" if i else "")
        unknown = sorted(set(recipe) - fields)
        if unknown:
            raise TargetError(f"unknown key in {place} {unknown[0]!r}; {did_you_mean(unknown[0], fields)}"
                              "fix the profile file")
        for key, allowed in choices.items():
            if recipe[key] not in allowed:
                raise TargetError(f"unknown {key} in {place} {recipe[key]!r}; {did_you_mean(recipe[key], allowed)}"
                                  f"supported: {', '.join(allowed)}")


def artifact_files(fmt: ExportFormat, path: Path) -> list[Path]:
    """The file at `path` and, for a multi-file format, its companions."""
    return [path, *getattr(fmt, "companions", lambda _: [])(path)]


def move_artifact(fmt: ExportFormat, source: Path, dest: Path) -> None:
    """Rename an artifact, companions included (each keeps its name relative to the main file)."""
    for src, dst in zip(artifact_files(fmt, source), artifact_files(fmt, dest)):
        src.replace(dst)


def remove_artifact(fmt: ExportFormat, path: Path) -> None:
    for file in artifact_files(fmt, path):
        file.unlink(missing_ok=True)
