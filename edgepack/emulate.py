"""Verify a bundle on emulated aarch64 (qemu-user) before it reaches an ARM device.

int8 kernels differ between ISAs: an artifact validated on x86 can still be wrong on
the Pi. This runs the bundle's golden self-test under `qemu-aarch64-static` with an
aarch64 Python (Debian's arm64 packages, unpacked with `dpkg -x`: no chroot, no binfmt)
and aarch64 wheels of the runtime's backends, and compares each artifact's outputs
with PyTorch's and with this machine's. Timings under emulation mean nothing and are
never reported as latency.

Backends are pinned to versions seen to run under Debian 12's qemu 7.2:
onnxruntime ≥ 1.20 crashes at import, ai-edge-litert 2.2+ crashes on load; with
`-cpu max` ai-edge-litert 2.1.6 computed wrong int8 results (32.5 off), with the target's
own CPU model (`-cpu cortex-a76` for a Pi 5) it is exact. So the emulated CPU is the
target's (`emulation_cpu` in the profile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

import edgepack_runtime
from edgepack_runtime.bundle import open_bundle
from edgepack_runtime.parity import max_abs_diff, run_samples

from .errors import EdgepackError
from .remote import manylinux_platforms

__all__ = ["EmulationError", "prepare", "verify_emulated", "EmulatedResult", "ENV_VERSION"]

ENV_VERSION = "aarch64-py311-v1"  # bump when the packages below change: a new cached environment
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
    "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1", "libstdc++6", "libgcc-s1",
    "libcrypt1", "libncursesw6", "libtinfo6", "libreadline8", "libgomp1",
)
WHEELS = ("numpy<2", "onnxruntime==1.19.2", "ai-edge-litert==2.1.6", "click", "rich")
QEMU = "qemu-aarch64-static"
DEFAULT_CPU = "max"
ARTIFACT_TIMEOUT_S = 900

# Runs inside the emulator, once per artifact (a crashing backend cannot hide the others).
_GUEST = """
import json, platform, sys
import numpy as np
import edgepack_runtime as er
from edgepack_runtime.parity import run_samples
bundle = er.open_bundle(sys.argv[1])
model = er.load(bundle.root, artifact=sys.argv[2], threads=1)
inputs, _ = bundle.golden()
np.savez(sys.argv[3], **run_samples(model.run, inputs))
result = er.self_test(model)
print(json.dumps({"passed": result.passed, "max_abs_diff": result.max_abs_diff, "tolerance": result.tolerance,
                  "backend": model.backend, "machine": platform.machine()}))
"""


class EmulationError(EdgepackError):
    """The emulated environment cannot be prepared or run."""


@dataclass(frozen=True)
class Environment:
    root: Path  # Debian arm64 files (sysroot for qemu -L)
    site: Path  # aarch64 wheels

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / "python3.11"


def cache_dir() -> Path:
    base = os.environ.get("EDGEPACK_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgepack")
    return Path(base) / "emulate" / ENV_VERSION


def _run(argv: list[str], what: str, fix: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        raise EmulationError(f"{what} failed ({lines[-1] if lines else proc.returncode}); {fix}")
    return proc


def prepare(log=lambda _: None) -> Environment:
    """The cached aarch64 environment, built on first use (Debian arm64 debs + aarch64 wheels)."""
    final = cache_dir()
    env = Environment(final / "root", final / "site")
    if (final / "ready").is_file():
        return env
    if shutil.which(QEMU) is None:
        raise EmulationError(f"{QEMU} is not installed; apt-get install qemu-user-static (make setup does, as root)")
    foreign = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    if "arm64" not in foreign:
        raise EmulationError("apt cannot fetch arm64 packages here; run `dpkg --add-architecture arm64 && "
                             "apt-get update` as root (make setup does)")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{ENV_VERSION}-", dir=final.parent))
    try:
        debs = work / "debs"
        debs.mkdir()
        log("downloading Debian arm64 Python packages")
        _run(["apt-get", "download", *(f"{p}:arm64" for p in DEBIAN_PACKAGES)], "apt-get download",
             "check that apt can reach Debian's archive", cwd=debs, timeout=900)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(work / "root")], f"unpacking {deb.name}", "remove the cache and retry")
        log("installing aarch64 wheels")
        platforms = [arg for p in manylinux_platforms("aarch64") for arg in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(work / "site"), *platforms,
              "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:", *WHEELS],
             "pip install of aarch64 wheels", "check that pip can reach PyPI", timeout=1800)
        shutil.rmtree(debs)
        (work / "ready").write_text(json.dumps({"debian": DEBIAN_PACKAGES, "wheels": WHEELS}))
        if final.exists():
            shutil.rmtree(final)
        os.rename(work, final)  # whole or not at all: a half-built cache is never used
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return env


@dataclass(frozen=True)
class EmulatedResult:
    artifact: str
    passed: bool
    max_abs_diff: Optional[float]  # vs PyTorch, on the artifact's golden samples
    tolerance: Optional[float]
    diff_vs_host: Optional[float]  # max |aarch64 output − this machine's output|, all golden samples
    backend: Optional[str]
    error: Optional[str] = None


def _guest_runtime(tmp: Path) -> Path:
    """A copy of this edgepack_runtime (pure Python) for the guest's path."""
    source = Path(edgepack_runtime.__file__).resolve().parent
    target = tmp / "guest" / "edgepack_runtime"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target.parent


def verify_emulated(bundle_path: Path, cpu: Optional[str] = None, log=lambda _: None) -> dict:
    """Golden self-test of every built artifact on emulated aarch64, vs PyTorch and vs this host."""
    env = prepare(log)
    bundle = open_bundle(bundle_path)
    bundle.verify_integrity()
    cpu = cpu or DEFAULT_CPU
    inputs, _ = bundle.golden()
    qemu_version = _run([QEMU, "--version"], "qemu", "reinstall qemu-user-static").stdout.splitlines()[0]
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgepack-emulate-") as tmp:
        guest = _guest_runtime(Path(tmp))
        environment = {**os.environ, "PYTHONPATH": f"{guest}:{env.site}", "EDGEPACK_TELEMETRY": "0",
                       "PYTHONDONTWRITEBYTECODE": "1"}
        for art in bundle.manifest.artifacts:
            if art.status != "ok":
                continue
            log(f"running {art.name} on emulated aarch64 ({cpu})")
            out_file = Path(tmp) / f"{art.name}.npz"
            argv = [QEMU, "-cpu", cpu, "-L", str(env.root), str(env.python), "-c", _GUEST,
                    str(bundle.root), art.name, str(out_file)]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=ARTIFACT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                results.append(EmulatedResult(art.name, False, None, None, None, None, "timed out"))
                continue
            if proc.returncode != 0 or not out_file.exists():
                lines = [line for line in proc.stderr.strip().splitlines() if line.strip() and not line.startswith("INFO")]
                error = lines[-1] if lines else f"exit code {proc.returncode}"
                results.append(EmulatedResult(art.name, False, None, None, None, None, error))
                continue
            guest_result = json.loads(proc.stdout.strip().splitlines()[-1])
            with np.load(out_file) as data:
                emulated = {k: data[k] for k in data.files}
            host_model = edgepack_runtime.load(bundle.root, artifact=art.name, threads=1)
            host = run_samples(host_model.run, inputs)
            results.append(EmulatedResult(
                art.name, guest_result["passed"], guest_result["max_abs_diff"], guest_result["tolerance"],
                max_abs_diff(emulated, host), guest_result["backend"]))
    return {
        "arch": "aarch64", "cpu": cpu, "qemu": qemu_version, "environment": ENV_VERSION,
        "seconds": round(time.perf_counter() - start, 1),
        "results": [r.__dict__ for r in results],
    }
