"""Device profiles: `targets/<family>/<name>.toml` → frozen dataclasses.

Adding a device is adding a file. `extends = "family/name"` starts from another
profile and overrides it table by table. Unknown keys are errors with a did-you-mean.
The `host` target is not a file: it is detected from this machine and extends the
closest profile.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Optional

from edgepack_runtime.hostinfo import HostInfo, host_info
from edgepack_runtime.manifest import INTEGER_PRECISIONS

from .errors import TargetError

__all__ = ["OnnxInt8", "OnnxSettings", "TfliteInt8", "TfliteSettings", "TargetProfile",
           "target_ids", "load_target", "HOST_ID", "FORMATS", "PRECISIONS"]

HOST_ID = "host"
# How the host target picks its base profile: first rule whose arch matches and whose
# ISA feature this machine has (None: any). Ordered from most to least capable.
HOST_BASES = (
    ("x86_64", "avx512_vnni", "x86-64/avx512-vnni"),
    ("x86_64", "avx2", "x86-64/avx2"),
    ("aarch64", None, "arm64/generic"),
)
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8", "dynamic-int8")
# CPU features that select onnxruntime's and XNNPACK's int8 kernels (each family rounds and
# saturates its own way), best first: a machine runs the family of the first one it has.
# A host whose family differs from the target's does not run the target's int8 code, e.g.
# an AVX-512 VNNI host never exercises the AVX2 saturation the x86-64/avx2 preset guards against.
INT8_KERNEL_FAMILIES = {
    "x86_64": ("amx_int8", "avx512_vnni", "avx_vnni", "avx2"),
    "aarch64": ("i8mm", "asimddp", "asimd"),
}


def int8_kernel_family(arch: str, isa) -> Optional[str]:
    """The int8 kernel family a machine with these ISA features runs (None: none known)."""
    return next((f for f in INT8_KERNEL_FAMILIES.get(arch, ()) if f in isa), None)
LAYOUTS = ("nchw", "nhwc")
# Allowed values of preset fields, checked when a profile loads (not deep in a converter).
PRESET_CHOICES = {
    "onnx": {"quant_format": ("qdq", "qoperator"), "activation_type": ("int8", "uint8"),
             "weight_type": ("int8", "uint8"), "calibrate_method": ("minmax", "entropy", "percentile")},
    "tflite": {"range_update": ("min_max", "moving_average")},
}


@dataclass(frozen=True)
class OnnxInt8:
    """onnxruntime static quantization preset (see the profile's comments for why)."""

    quant_format: str  # "qdq" or "qoperator"
    activation_type: str  # "int8" or "uint8"
    weight_type: str
    per_channel: bool
    reduce_range: bool
    calibrate_method: str  # "minmax", "entropy" or "percentile"
    relies_on: tuple[str, ...]  # ISA features whose kernels this preset's numbers depend on
    percentile: float = 99.999  # calibrate_method "percentile": share of each activation's values kept in range
    bias_correction: bool = False  # fold NNCF's bias correction into the float model before quantizing
    # More recipes for the accuracy-driven search, each a table overriding fields above;
    # the build keeps the fastest recipe within the accuracy budget (see docs/quantization.md).
    search: tuple[dict, ...] = ()

    def recipes(self) -> list[dict]:
        """This preset, then each `search` entry applied over it, as quantize settings."""
        base = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("search", "relies_on")}
        return [base] + [{**base, **override} for override in self.search]


@dataclass(frozen=True)
class OnnxSettings:
    opset: int
    precisions: tuple[str, ...]
    int8: OnnxInt8


@dataclass(frozen=True)
class TfliteInt8:
    """ai-edge-quantizer preset for full-integer int8."""

    recipe: str  # "static_wi8_ai8"
    range_update: str  # "min_max" or "moving_average": how calibration merges sample ranges
    relies_on: tuple[str, ...]
    search: tuple[dict, ...] = ()  # more recipes for the accuracy-driven search, as in OnnxInt8

    def recipes(self) -> list[dict]:
        base = {"recipe": self.recipe, "range_update": self.range_update}
        return [base] + [{**base, **override} for override in self.search]


@dataclass(frozen=True)
class TfliteSettings:
    precisions: tuple[str, ...]
    layout: str  # input layout of the artifact: "nchw" (as PyTorch) or "nhwc"
    int8: TfliteInt8


@dataclass(frozen=True)
class TargetProfile:
    id: str
    description: str
    arch: str
    cpu: str
    cores: int
    isa: tuple[str, ...]
    threads: int
    formats: tuple[str, ...]
    prefer: tuple[str, ...]
    onnx: Optional[OnnxSettings] = None
    tflite: Optional[TfliteSettings] = None
    # qemu -cpu model for emulated verification of the target's kernels; None or "": none can
    emulation_cpu: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def settings(self, fmt: str):
        return getattr(self, fmt)

    def matches_host(self, host: HostInfo, fmt: str, precision: str) -> bool:
        """Whether `host` runs the kernels this target will: same architecture and, for
        integer precisions, every ISA feature the format's int8 preset relies on."""
        if host.arch != self.arch:
            return False
        if precision not in INTEGER_PRECISIONS:
            return True
        same_kernels = int8_kernel_family(self.arch, self.isa) == int8_kernel_family(host.arch, host.isa)
        return same_kernels and set(self.settings(fmt).int8.relies_on) <= set(host.isa)


# Nested TOML tables and the dataclass each becomes.
_TABLES = {
    TargetProfile: {"onnx": OnnxSettings, "tflite": TfliteSettings},
    OnnxSettings: {"int8": OnnxInt8},
    TfliteSettings: {"int8": TfliteInt8},
}


def _profiles_root():
    return resources.files("edgepack.profiles")


def target_ids() -> list[str]:
    """Every known target id, `host` first."""
    ids = []
    for family in _profiles_root().iterdir():
        if family.is_dir() and not family.name.startswith(("_", ".")):
            ids += [f"{family.name}/{f.name[:-5]}" for f in family.iterdir() if f.name.endswith(".toml")]
    return [HOST_ID] + sorted(ids)


def _unknown(kind: str, value: str, choices, fix: str) -> TargetError:
    close = difflib.get_close_matches(value, list(choices), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return TargetError(f"unknown {kind} {value!r}; {hint}{fix}")


def _read(target_id: str) -> dict:
    family, _, name = target_id.partition("/")
    node = _profiles_root() / family / f"{name}.toml"
    if not name or not node.is_file():
        raise _unknown("target", target_id, target_ids(), "run `edgepack targets` to list them")
    try:
        return tomllib.loads(node.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"target profile {target_id} is not valid TOML ({exc}); fix targets/{target_id}.toml") from None


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _resolve_raw(target_id: str, seen: tuple[str, ...] = ()) -> dict:
    if target_id in seen:
        raise TargetError(f"target profiles extend each other in a cycle: {' → '.join(seen + (target_id,))}; fix `extends`")
    raw = _read(target_id)
    parent = raw.pop("extends", None)
    return _merge(_resolve_raw(parent, seen + (target_id,)), raw) if parent else raw


def _build(cls: type, raw: Any, where: str):
    """Make dataclass `cls` from a TOML table, naming unknown and missing keys."""
    if not isinstance(raw, dict):
        raise TargetError(f"{where} must be a table; fix the profile")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise _unknown(f"key in {where}", key, fields, "fix the profile file")
    missing = [n for n, f in fields.items() if n not in raw and f.default is dataclasses.MISSING]
    if missing:
        raise TargetError(f"{where} is missing {', '.join(missing)}; add them to the profile or its `extends` base")
    values = {}
    for name, value in raw.items():
        nested = _TABLES.get(cls, {}).get(name)
        if nested is not None:
            value = _build(nested, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _check(profile: TargetProfile) -> TargetProfile:
    where = f"target {profile.id}"
    for fmt in profile.formats:
        if fmt not in FORMATS:
            raise _unknown(f"format in {where}", fmt, FORMATS, f"supported formats: {', '.join(FORMATS)}")
        settings = profile.settings(fmt)
        if settings is None:
            raise TargetError(f"{where} lists format {fmt!r} but has no [{fmt}] table; add one")
        for precision in settings.precisions:
            if precision not in PRECISIONS:
                raise _unknown(f"precision in {where}.{fmt}", precision, PRECISIONS, f"supported: {', '.join(PRECISIONS)}")
    for precision in profile.prefer:
        if precision not in PRECISIONS:
            raise _unknown(f"precision in {where}.prefer", precision, PRECISIONS, f"supported: {', '.join(PRECISIONS)}")
    if profile.tflite is not None and profile.tflite.layout not in LAYOUTS:
        raise _unknown(f"layout in {where}.tflite", profile.tflite.layout, LAYOUTS, f"supported: {', '.join(LAYOUTS)}")
    for fmt, choices in PRESET_CHOICES.items():
        settings = profile.settings(fmt)
        if settings is None:
            continue
        recipes = settings.int8.recipes()
        for i, recipe in enumerate(recipes):
            place = f"{where}.{fmt}.int8" + (f".search[{i - 1}]" if i else "")
            unknown = set(recipe) - {f.name for f in dataclasses.fields(settings.int8)}
            if unknown:
                raise _unknown(f"key in {place}", sorted(unknown)[0], recipes[0], "fix the profile file")
            for key, allowed in choices.items():
                if recipe[key] not in allowed:
                    raise _unknown(f"{key} in {place}", recipe[key], allowed, f"supported: {', '.join(allowed)}")
    return profile


def _host_raw(host: HostInfo) -> dict:
    flags = set(host.isa)
    for arch, feature, base in HOST_BASES:
        if host.arch == arch and (feature is None or feature in flags):
            raw = _resolve_raw(base)
            raw.update(
                description=f"this machine, detected; based on {base}",
                arch=host.arch,
                cpu=host.cpu,
                cores=host.cores,
                isa=list(host.isa),
                threads=host.cores,
            )
            return raw
    raise TargetError(
        f"no profile fits this machine ({host.arch}, {host.cpu}); pass --target with one of: "
        + ", ".join(target_ids()[1:])
    )


def load_target(target_id: str, host: Optional[HostInfo] = None) -> TargetProfile:
    """Resolve a profile (following `extends`) into a frozen TargetProfile."""
    raw = _host_raw(host or host_info()) if target_id == HOST_ID else _resolve_raw(target_id)
    raw = {**raw, "id": target_id}
    return _check(_build(TargetProfile, raw, f"target {target_id}"))
