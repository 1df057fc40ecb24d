"""Device profiles: `targets/<family>/<name>.toml` → frozen dataclasses.

Adding a device is adding a file (here, or in a directory named by $EDGEPACK_TARGETS).
`extends = "family/name"` starts from another
profile and overrides it table by table. Unknown keys are errors with a did-you-mean.
The `host` target is not a file: it is detected from this machine and extends the
closest profile.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

from edgepack_runtime.hostinfo import HostInfo, host_info, int8_kernel_family
from edgepack_runtime.precision import PRECISIONS
from edgepack_runtime.typed import Problem, from_data

from .errors import TargetError, did_you_mean
from .formats import formats

__all__ = ["TargetProfile", "target_ids", "load_target", "HOST_ID", "TARGETS_ENV"]

HOST_ID = "host"
# How the host target picks its base profile: first rule whose arch matches and whose
# ISA feature this machine has (None: any). Ordered from most to least capable.
HOST_BASES = (
    ("x86_64", "avx512_vnni", "x86-64/avx512-vnni"),
    ("x86_64", "avx2", "x86-64/avx2"),
    ("aarch64", None, "arm64/generic"),
)
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
    # qemu -cpu model for emulated verification of the target's kernels; None or "": none can
    emulation_cpu: Optional[str] = None
    # Each format's [name] table, as that format's settings class (edgepack.formats registry).
    format_settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """As in the TOML (and the manifest's `target`): format tables at the top level."""
        plain = dataclasses.asdict(dataclasses.replace(self, format_settings={}))
        del plain["format_settings"]
        return {**plain, **{name: dataclasses.asdict(s) for name, s in self.format_settings.items()}}

    def settings(self, fmt: str):
        """The profile's table for format `fmt` (its settings class), or None."""
        return self.format_settings.get(fmt)

    def matches_host(self, host: HostInfo, fmt: str, precision: str) -> bool:
        """Whether `host` runs the kernels this target will: same architecture and, for
        integer precisions, every ISA feature the format's int8 preset relies on."""
        if host.arch != self.arch:
            return False
        kind = PRECISIONS.get(precision)
        if kind is None or not kind.integer:
            return True
        same_kernels = int8_kernel_family(self.arch, self.isa) == int8_kernel_family(host.arch, host.isa)
        return same_kernels and set(self.relies_on(fmt, precision)) <= set(host.isa)

    def relies_on(self, fmt: str, precision: str) -> tuple[str, ...]:
        """The ISA features the format's preset for `precision` says its kernels rely on."""
        kind = PRECISIONS.get(precision)
        preset = getattr(self.settings(fmt), kind.relies_on) if kind is not None and kind.relies_on else None
        return tuple(preset.relies_on) if preset is not None else ()


# Directories of more profiles (os.pathsep-separated), searched before the built-in ones:
# a team's own devices, or a format plugin's tables, without editing the package.
TARGETS_ENV = "EDGEPACK_TARGETS"


def _profiles_root():
    return resources.files("edgepack.profiles")


def _roots() -> list:
    extra = [Path(p) for p in os.environ.get(TARGETS_ENV, "").split(os.pathsep) if p]
    return [*extra, _profiles_root()]


def target_ids() -> list[str]:
    """Every known target id, `host` first."""
    ids = set()
    for root in _roots():
        if not root.is_dir():
            continue
        for family in root.iterdir():
            if family.is_dir() and not family.name.startswith(("_", ".")):
                ids |= {f"{family.name}/{f.name[:-5]}" for f in family.iterdir() if f.name.endswith(".toml")}
    return [HOST_ID] + sorted(ids)


def _unknown(kind: str, value: str, choices, fix: str) -> TargetError:
    return TargetError(f"unknown {kind} {value!r}; {did_you_mean(value, choices)}{fix}")


def _read(target_id: str) -> dict:
    family, _, name = target_id.partition("/")
    node = next((root / family / f"{name}.toml" for root in _roots() if (root / family / f"{name}.toml").is_file()),
                None) if name else None
    if node is None:
        raise _unknown("target", target_id, target_ids(), "run `edgepack targets` to list them")
    try:
        return tomllib.loads(node.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"target profile {target_id} is not valid TOML ({exc}); "
                          f"fix targets/{target_id}.toml") from exc


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        both_tables = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_tables else value
    return merged


def _resolve_raw(target_id: str, seen: tuple[str, ...] = ()) -> dict:
    if target_id in seen:
        raise TargetError(f"target profiles extend each other in a cycle: {' → '.join(seen + (target_id,))}; "
                          "fix `extends`")
    raw = _read(target_id)
    parent = raw.pop("extends", None)
    return _merge(_resolve_raw(parent, seen + (target_id,)), raw) if parent else raw


def _check(profile: TargetProfile) -> TargetProfile:
    """What the types do not say: formats and precisions that exist, each table's own rules."""
    where = f"target {profile.id}"
    known = formats()
    for fmt in profile.formats:
        if fmt not in known:
            raise _unknown(f"format in {where}", fmt, known, f"supported formats: {', '.join(known)}")
        if profile.settings(fmt) is None:
            raise TargetError(f"{where} lists format {fmt!r} but has no [{fmt}] table; add one")
    for name, settings in profile.format_settings.items():
        allowed = known[name].precisions
        for precision in settings.precisions:
            if precision not in allowed:
                raise _unknown(f"precision in {where}.{name}", precision, allowed,
                               f"{name} builds {', '.join(allowed)}")
        settings.check(f"{where}.{name}")
    every = sorted({p for f in known.values() for p in f.precisions})
    for precision in profile.prefer:
        if precision not in every:
            raise _unknown(f"precision in {where}.prefer", precision, every, f"supported: {', '.join(every)}")
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
    known = formats()
    tables = {name: raw.pop(name) for name in list(raw) if name in known}  # each format reads its own
    where = f"target {target_id}"
    try:
        profile = from_data(TargetProfile, raw, where, suggest=known)
        settings = {name: from_data(known[name].settings_class, table, f"{where}.{name}")
                    for name, table in tables.items()}
    except Problem as problem:
        raise TargetError(f"{problem}; fix the profile file (or its `extends` base)") from problem
    return _check(dataclasses.replace(profile, format_settings=settings))
