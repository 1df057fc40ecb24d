"""Where a benchmark ran: absolute numbers only mean something with this provenance."""

from __future__ import annotations

import glob
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from .hostinfo import host_info

__all__ = ["device_info", "device_name", "temperatures_c", "device_key", "NAME_ENV"]

_DT_MODEL = Path("/proc/device-tree/model")  # "Raspberry Pi 5 Model B Rev 1.0"
_CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq")
_VCGENCMD_TIMEOUT_S = 5
NAME_ENV = "EDGEPACK_DEVICE_NAME"  # overrides the detected name (e.g. "pi5-shelf-2")


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def temperatures_c() -> dict[str, float]:
    """Every thermal zone the kernel exposes (the Pi's SoC is `cpu-thermal`)."""
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        kind, raw = _read(Path(zone) / "type"), _read(Path(zone) / "temp")
        if kind and raw and raw.lstrip("-").isdigit():
            temps[kind] = int(raw) / 1000.0
    return temps


def _throttled() -> Optional[str]:
    """`vcgencmd get_throttled` on a Pi: 0x0 means never throttled or under-volted."""
    if shutil.which("vcgencmd") is None:
        return None
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True,
                             timeout=_VCGENCMD_TIMEOUT_S).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.partition("=")[2] or out or None


def device_name() -> str:
    """EDGEPACK_DEVICE_NAME, else the board model (Pi: /proc/device-tree/model), else the hostname."""
    return os.environ.get(NAME_ENV) or _read(_DT_MODEL) or socket.gethostname()


def device_info() -> dict[str, Any]:
    host = host_info()
    freq = _read(_CPUFREQ / "scaling_cur_freq")
    return {
        "name": device_name(),
        "hostname": socket.gethostname(),
        "cpu": host.cpu,
        "arch": host.arch,
        "cores": host.cores,
        "isa": list(host.isa),
        "governor": _read(_CPUFREQ / "scaling_governor"),
        "freq_mhz": int(freq) / 1000.0 if freq and freq.isdigit() else None,
        "temperature_c": temperatures_c(),
        "throttled": _throttled(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
    }


def device_key() -> str:
    """Stable id of this machine for caches: name, CPU and core count."""
    host = host_info()
    return f"{device_name()}|{host.cpu}|{host.arch}|{host.cores}"
