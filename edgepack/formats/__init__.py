"""Artifact formats as plugins: one module per format registers itself, and the build,
the target profiles, remote deploy and emulation read this registry (docs/extending.md).

Built-in formats are listed here (so edgepack run from its source tree has them);
plugins register through the entry point group `edgepack.formats` or in-process with
`register()`. Format modules stay light at import (no torch, no converter): `edgepack
targets` reads them.
"""

from __future__ import annotations

import abc
import dataclasses
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgepack_runtime.manifest import TensorSpec
from edgepack_runtime.precision import BASE, PRECISIONS, Precision
from edgepack_runtime.registry import Registry

from ..errors import TargetError, did_you_mean, mapped
from .contract import Exported, Op, OpGraph, QuantPlan, QuantResult, Recipe

if TYPE_CHECKING:
    import torch

    from ..targets import TargetProfile

__all__ = ["ExportFormat", "get_format", "formats", "register", "supports", "check_format", "check_recipes",
           "MIXED_PRECISION", "ATTENTION", "MULTI_FILE", "artifact_files", "move_artifact",
           "remove_artifact", "ENTRY_POINTS", "Exported", "Op", "OpGraph", "Recipe", "QuantPlan", "QuantResult"]

ENTRY_POINTS = "edgepack.formats"


# Capabilities a format may declare, each with the method that provides it.
MIXED_PRECISION = "mixed_precision"  # sensitive_layers(): rank layers to keep in float
ATTENTION = "attention"  # has_attention(): tell an attention model (it gets dynamic-int8 too)
MULTI_FILE = "multi_file"  # companions(): the files that go with an artifact's main one
CAPABILITIES = {MIXED_PRECISION: "sensitive_layers", ATTENTION: "has_attention", MULTI_FILE: "companions"}
REQUIRED_ATTRIBUTES = ("name", "suffix", "precisions", "settings_class", "runtime_extra", "emulation_wheels")


class ExportFormat(abc.ABC):
    """The contract of an artifact format; subclass it, fill in the attributes and the
    abstract methods, and declare in `capabilities` which optional methods it provides.
    Checked when a format is registered (`check_format`)."""

    name: str  # as in the manifest and the target profile: "onnx"
    suffix: str  # file suffix: ".onnx"
    precisions: tuple[str, ...]  # all it can build (edgepack_runtime.precision); a profile's list is the default set
    # The profile's [name] table as a frozen dataclass (nested tables as dataclass fields,
    # lists as tuples) with a `check(where)` that raises TargetError on values it does not allow.
    settings_class: type
    runtime_extra: str  # the edgepack-runtime extra whose backend runs it: pip install edgepack-runtime[extra]
    emulation_wheels: tuple[str, ...]  # pinned aarch64 wheels of that backend, for --verify-emulated
    capabilities: frozenset[str] = frozenset()  # of CAPABILITIES

    @abc.abstractmethod
    def export(self, module: "torch.nn.Module", inputs: tuple[TensorSpec, ...],
               output_names: list[str], target: "TargetProfile", out: Path) -> Exported:
        """Write the fp32 artifact of `module` to `out` (with its companions); return it as an
        `Exported` with its op graph (what lets the search keep a tail or a prefix float)
        and any state of the format's own that `quantize()` needs."""

    def export_key(self, target: "TargetProfile") -> object:
        """What of `target` the fp32 export depends on: the targets of one build whose keys
        are equal share one export (and the searches over it). Default: the target itself."""
        return target.id

    @abc.abstractmethod
    def layout(self, target: "TargetProfile") -> str | None:
        """"nhwc" when the artifact takes 4-D tensors channels-last, None when as PyTorch."""

    @abc.abstractmethod
    def recipes(self, target: "TargetProfile", precision: Precision) -> list[Recipe]:
        """The quantization recipes to try for `precision`, the target's preset first
        (`[Recipe()]` when it has no knobs)."""

    @abc.abstractmethod
    def quantize(self, exported: Exported, out: Path, target: "TargetProfile", plan: QuantPlan,
                 calibration: dict[str, np.ndarray]) -> QuantResult:
        """Write the `plan.precision` artifact derived from `exported` to `out` with
        `plan.recipe`, keeping the ops `plan.float_ops` names in float; a calibrated precision
        is calibrated on `calibration` ([N, *shape] per input, fed one sample at a time).
        Returns what it did, which the manifest records."""

    @abc.abstractmethod
    def toolchain(self) -> dict[str, str]:
        """Versions of the libraries this format's export and quantization used."""

    def sensitive_layers(self, fp32: Path, quantized: Path, calibration: dict[str, np.ndarray],
                         target: "TargetProfile") -> list[list[str]]:
        """MIXED_PRECISION: layers to keep in float, most sensitive first (each entry the
        op ids kept together, as the exported graph names them)."""
        raise NotImplementedError(f"format {self.name} does not declare {MIXED_PRECISION}")

    def has_attention(self, fp32: Path) -> bool:
        """ATTENTION: whether the exported model has attention (matmuls of two activations)."""
        return False

    def companions(self, path: Path) -> list[Path]:
        """MULTI_FILE: the files that go with the one at `path` (next to it, named after it)."""
        return []


def check_format(name: str, fmt) -> None:
    """A format's contract, checked when it registers: one line naming what is missing."""
    where = f"format plugin {name!r} ({type(fmt).__module__}.{type(fmt).__qualname__})"
    if not isinstance(fmt, ExportFormat):
        raise TargetError(f"{where} is not an edgepack.formats.ExportFormat; subclass it (docs/extending.md)")
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(fmt, a)]
    if missing:
        raise TargetError(f"{where} lacks {', '.join(missing)}; set them on the class (docs/extending.md)")
    if fmt.name != name:
        raise TargetError(f"{where} is registered as {name!r} but names itself {fmt.name!r}; use one name")
    unknown = sorted(set(fmt.capabilities) - set(CAPABILITIES))
    if unknown:
        raise TargetError(f"{where} declares unknown capabilities {unknown}; known: {', '.join(CAPABILITIES)}")
    for capability, method in CAPABILITIES.items():
        provided = getattr(type(fmt), method) is not getattr(ExportFormat, method)
        if provided != (capability in fmt.capabilities):
            raise TargetError(f"{where} {'defines' if provided else 'lacks'} {method}() but "
                              f"{'does not declare' if provided else 'declares'} {capability!r} in `capabilities`")
    unregistered = [p for p in fmt.precisions if p not in PRECISIONS]
    if BASE not in fmt.precisions or unregistered:
        raise TargetError(f"{where} builds precisions {list(fmt.precisions)}: they must include {BASE!r} and be "
                          f"registered (edgepack_runtime.precision; unknown: {', '.join(unregistered) or 'none'})")


def _instance(point: EntryPoint) -> ExportFormat:
    # A plugin that fails to import, or leaves an abstract method out, fails with one line.
    with mapped(TargetError, f"format plugin {point.name!r} ({point.value}) cannot be loaded",
                "fix it, or uninstall it (docs/extending.md)"):
        loaded = point.load()
        return loaded() if isinstance(loaded, type) else loaded


BUILTIN = {"onnx": "edgepack.formats.onnx:OnnxFormat", "tflite": "edgepack.formats.tflite:TfliteFormat",
           "ncnn": "edgepack.formats.ncnn:NcnnFormat"}
_registry: Registry[ExportFormat] = Registry("format", ENTRY_POINTS, BUILTIN, load=_instance, check=check_format)


def register(fmt: ExportFormat) -> ExportFormat:
    """Add a format (an instance) to the registry; a later one of the same name replaces it."""
    return _registry.register(fmt.name, fmt)


def formats() -> dict[str, ExportFormat]:
    """Every registered format by name: the built-ins, the entry points (loaded once) and
    `register()`ed ones."""
    return _registry.all()


def get_format(name: str) -> ExportFormat:
    return formats()[name]


def supports(fmt: ExportFormat, capability: str) -> bool:
    """Whether `fmt` declares `capability` (MIXED_PRECISION, ATTENTION, MULTI_FILE)."""
    return capability in fmt.capabilities


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
    return [path, *fmt.companions(path)]


def move_artifact(fmt: ExportFormat, source: Path, dest: Path) -> None:
    """Rename an artifact, companions included (each keeps its name relative to the main file)."""
    for src, dst in zip(artifact_files(fmt, source), artifact_files(fmt, dest), strict=True):
        src.replace(dst)


def remove_artifact(fmt: ExportFormat, path: Path) -> None:
    for file in artifact_files(fmt, path):
        file.unlink(missing_ok=True)
