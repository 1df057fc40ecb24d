"""What this machine is: architecture, CPU model, cores and ISA flags.

Used to record where an artifact was validated or benchmarked, and by the packager
to detect the `host` target. Reads /proc/cpuinfo where it exists (Linux, incl. the Pi).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Optional

__all__ = ["HostInfo", "host_info", "normalize_arch", "int8_kernel_family", "INT8_KERNEL_FAMILIES"]

_CPUINFO = Path("/proc/cpuinfo")
# Linux spells the ISA list "flags" on x86 and "Features" on ARM.
_FLAG_KEYS = ("flags", "features")
# In priority order. x86 says "model name" (its "model" is a number); ARM kernels
# often only give "Model" (Pi) or "Hardware".
_MODEL_KEYS = ("model name", "model", "hardware", "cpu model")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def normalize_arch(arch: str) -> str:
    """One spelling per architecture: `x86_64` or `aarch64` (as Linux reports them)."""
    arch = arch.strip().lower()
    return _ARCH_ALIASES.get(arch, arch)


@dataclass(frozen=True)
class HostInfo:
    arch: str
    cpu: str
    cores: int
    isa: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "cpu": self.cpu, "cores": self.cores, "isa": list(self.isa)}


def _parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    first: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip().lower(), value.strip())
    model = next((first[k] for k in _MODEL_KEYS if first.get(k)), "")
    flags = next((set(first[k].split()) for k in _FLAG_KEYS if k in first), set())
    return model, flags


def host_info() -> HostInfo:
    """Describe the machine this process runs on."""
    model, flags = "", set[str]()
    try:
        model, flags = _parse_cpuinfo(_CPUINFO.read_text(errors="replace"))
    except OSError:
        pass  # not Linux: architecture and core count still say something
    return HostInfo(
        arch=normalize_arch(platform.machine()),
        cpu=model or platform.processor() or "unknown",
        cores=os.cpu_count() or 1,
        isa=tuple(sorted(flags)),
    )


# CPU features that select onnxruntime's and XNNPACK's int8 kernels (each family rounds and
# saturates its own way), best first: a machine runs the family of the first one it has.
# A host whose family differs from the target's does not run the target's int8 code, e.g.
# an AVX-512 VNNI host never exercises the AVX2 saturation the x86-64/avx2 preset guards against.
INT8_KERNEL_FAMILIES = {
    "x86_64": ("amx_int8", "avx512_vnni", "avx_vnni", "avx2"),
    "aarch64": ("i8mm", "asimddp", "asimd"),
}


def int8_kernel_family(arch: str, isa: Collection[str]) -> Optional[str]:
    """The int8 kernel family a machine with these ISA features runs (None: none known)."""
    return next((f for f in INT8_KERNEL_FAMILIES.get(arch, ()) if f in isa), None)
