"""What a device installs: the edgepack-runtime wheel built here, the extras a bundle needs,
and (offline) every wheel for the device's CPU and Python, downloaded here."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import edgepack_runtime
from edgepack_runtime.bundle import Bundle
from edgepack_runtime.signature import SIGNATURE_FILE
from edgepack_runtime.subprocesses import run_checked

from .errors import DeviceError

__all__ = ["build_runtime_wheel", "runtime_extras", "download_wheels", "manylinux_platforms"]

INSTALL_TIMEOUT_S = 1800


def build_runtime_wheel(out_dir: Path) -> Path:
    """A wheel of the edgepack-runtime installed here, built from its source tree."""
    source = Path(edgepack_runtime.__file__).resolve().parents[1]
    if not (source / "pyproject.toml").is_file():
        raise DeviceError(f"cannot find edgepack-runtime's source (looked in {source}); install edgepack from "
                          "its repository (`make setup`) to deploy")
    with tempfile.TemporaryDirectory(prefix="edgepack-wheel-") as tmp:
        copy = Path(tmp) / "runtime"  # build from a copy: no build/ directory left in the source
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        # Fixed zip timestamps: the same source gives the same wheel, so devices reinstall
        # only when the runtime really changed (the role compares checksums).
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
        run_checked([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(copy)],
                    "building the edgepack-runtime wheel", "check that pip works (`pip wheel runtime/`)",
                    error=DeviceError, timeout=INSTALL_TIMEOUT_S, env=env)
    wheels = sorted(out_dir.glob("edgepack_runtime-*.whl"))
    if not wheels:
        raise DeviceError(f"building the edgepack-runtime wheel wrote no wheel into {out_dir}; check that pip works")
    return wheels[-1]


def runtime_extras(bundle: Bundle, signing: bool = False) -> str:
    """The edgepack-runtime extras the bundle needs: its artifacts' backends (each format names
    its own), Pillow or tokenizers when it takes raw images or texts, cryptography when it is
    signed (or signatures are required)."""
    from .formats import formats

    known = formats()
    extras = {known[a.format].runtime_extra for a in bundle.manifest.artifacts
              if a.status == "ok" and a.format in known}
    if bundle.manifest.preprocessing is not None:
        extras.add(bundle.manifest.preprocessing.kind)  # the extras are named "image" and "text"
    if signing or (bundle.root / SIGNATURE_FILE).is_file():
        extras.add("signing")
    return ",".join(sorted(extras))


def manylinux_platforms(machine: str) -> list[str]:
    """pip --platform tags a current glibc Linux on `machine` accepts (Debian 12: glibc 2.36)."""
    return [f"manylinux2014_{machine}"] + [f"manylinux_2_{v}_{machine}" for v in (17, 24, 26, 27, 28, 31, 34, 35, 36)]


def download_wheels(wheel: Path, extras: str, machine: str, python_version: str, out_dir: Path) -> Path:
    """Every wheel the device needs to install the runtime offline, for its CPU and Python."""
    out_dir.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in manylinux_platforms(machine) for a in ("--platform", p)]
    run_checked([sys.executable, "-m", "pip", "download", "-q", "-d", str(out_dir), *platforms,
                 "--python-version", python_version, "--implementation", "cp", "--only-binary=:all:",
                 f"{wheel}[{extras}]"], f"downloading wheels for {machine}/cp{python_version}",
                "check the package index", error=DeviceError, timeout=INSTALL_TIMEOUT_S)
    return out_dir
