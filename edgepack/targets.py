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

from .errors import TargetError

__all__ = ["QuantPreset", "OnnxSettings", "TargetProfile", "target_ids", "load_target", "HOST_ID"]

HOST_ID = "host"
# How the host target picks its base profile: first rule whose arch matches and whose
# ISA feature this machine has (None: any). Ordered from most to least capable.
HOST_BASES = (
    ("x86_64", "avx512_vnni", "x86-64/avx512-vnni"),
    ("x86_64", "avx2", "x86-64/avx2"),
    ("aarch64", None, "arm64/generic"),
)
PRECISIONS = ("fp32", "int8")
FORMATS = ("onnx",)


@dataclass(frozen=True)
class QuantPreset:
    """How one format is quantized to int8 for this device (see the profile's comments for why)."""

    quant_format: str  # "qdq" or "qoperator"
    activation_type: str  # "int8" or "uint8"
    weight_type: str
    per_channel: bool
    reduce_range: bool
    calibrate_method: str  # "minmax", "entropy" or "percentile"
    relies_on: tuple[str, ...]  # ISA features whose kernels this preset's numbers depend on


@dataclass(frozen=True)
class OnnxSettings:
    opset: int
    int8: QuantPreset


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
    precisions: tuple[str, ...]
    prefer: tuple[str, ...]
    onnx: OnnxSettings

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def preset(self, fmt: str) -> QuantPreset:
        return getattr(self, fmt).int8

    def matches_host(self, host: HostInfo, fmt: str, precision: str) -> bool:
        """Whether `host` runs the kernels this target will: same architecture and, for
        int8, every ISA feature the format's preset relies on."""
        if host.arch != self.arch:
            return False
        return precision != "int8" or set(self.preset(fmt).relies_on) <= set(host.isa)


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
    missing = [name for name in fields if name not in raw and name != "id"]
    if missing:
        raise TargetError(f"{where} is missing {', '.join(missing)}; add them to the profile or its `extends` base")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        value = raw[name]
        if f.type == "QuantPreset":
            value = _build(QuantPreset, value, f"{where}.{name}")
        elif f.type == "OnnxSettings":
            value = _build(OnnxSettings, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _check(profile: TargetProfile) -> TargetProfile:
    where = f"target {profile.id}"
    for fmt in profile.formats:
        if fmt not in FORMATS:
            raise _unknown(f"format in {where}", fmt, FORMATS, f"supported formats: {', '.join(FORMATS)}")
    for precision in profile.precisions + profile.prefer:
        if precision not in PRECISIONS:
            raise _unknown(f"precision in {where}", precision, PRECISIONS, f"supported: {', '.join(PRECISIONS)}")
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
