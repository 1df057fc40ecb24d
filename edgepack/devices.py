"""Devices reachable over SSH: `--host user@host[:port]` or a `devices.toml` inventory.

    [[device]]
    name = "pi5-kitchen"          # how results name it
    host = "192.168.1.20"
    user = "pi"                   # default: your local user name
    port = 22
    identity = "~/.ssh/id_ed25519"  # default: ssh's own choice
    python = "python3"            # the device's Python, used to create the venv
    target = "raspberry-pi/5"     # optional: what the device is
    root = "~/.edgepack"          # where bundles, the venv and results live on it
"""

from __future__ import annotations

import getpass
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

from edgepack_runtime.typed import Problem, from_data

from .errors import DeviceError

__all__ = ["Device", "parse_host", "load_inventory", "DeviceError"]

DEFAULT_ROOT = "~/.edgepack"
_HOST = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Device:
    name: str
    host: str
    user: Optional[str] = None
    port: int = 22
    identity: Optional[str] = None
    python: str = "python3"
    target: Optional[str] = None
    root: str = DEFAULT_ROOT

    @property
    def destination(self) -> str:
        return f"{self.user or getpass.getuser()}@{self.host}"


def parse_host(text: str, identity: Optional[str] = None) -> Device:
    """`user@host[:port]` (IPv6 in brackets) → Device named after it."""
    match = _HOST.match(text.strip())
    if not match:
        raise DeviceError(f"--host {text!r} is not user@host[:port], e.g. pi@raspberrypi.local:22")
    return Device(name=text.strip(), host=match["host"].strip("[]"), user=match["user"],
                  port=int(match["port"] or 22), identity=identity)


def load_inventory(path: Path) -> list[Device]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise DeviceError(f"cannot read {path} ({exc.strerror}); pass the devices.toml inventory") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DeviceError(f"{path} is not valid TOML ({exc}); fix it") from exc
    entries = data.get("device")
    if not isinstance(entries, list) or not entries:
        raise DeviceError(f"{path} has no [[device]] entries; see README for the format")
    devices = []
    for i, entry in enumerate(entries):
        try:
            devices.append(from_data(Device, entry, f"{path}: device #{i + 1}"))
        except Problem as problem:
            keys = ", ".join(f.name for f in fields(Device))
            raise DeviceError(f"{problem}; each [[device]] takes {keys} (name and host required)") from problem
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise DeviceError(f"{path}: device names must be unique, got {names}")
    return devices
