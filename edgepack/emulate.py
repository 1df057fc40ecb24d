"""Verify a bundle on an emulated ISA (qemu-user) before it reaches the device.

int8 kernels differ between ISAs: an artifact validated on x86 can still be wrong on
the Pi, and an AVX-512 VNNI host never runs the AVX2 kernels (and their int16
saturation) of an older x86 box. This runs the bundle's golden self-test, and with eval
data the accuracy of its integer artifacts, under qemu-user with the target's own CPU
model: for aarch64 an aarch64 Python (Debian's arm64 packages, unpacked with `dpkg -x`:
no chroot, no binfmt) and aarch64 wheels of the runtime's backends; for x86_64 this
machine's own Python with a CPU model that lacks the features this host has (qemu's TCG
runs AVX2 but not AVX-512). Each artifact's outputs are compared with PyTorch's and with
this machine's. Timings under emulation mean nothing and are never reported as latency.

Backends are pinned to versions seen to run under Debian 12's qemu 7.2:
onnxruntime ≥ 1.20 crashes at import, ai-edge-litert 2.2+ crashes on load; with
`-cpu max` ai-edge-litert 2.1.6 computed wrong int8 results (32.5 off), with the target's
own CPU model (`-cpu cortex-a76` for a Pi 5) it is exact. So the emulated CPU is the
target's (`emulation_cpu` in the profile).
"""

from __future__ import annotations

import dataclasses
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
from edgepack_runtime.errors import last_line
from edgepack_runtime.files import user_dir
from edgepack_runtime.parity import max_abs_diff, run_samples
from edgepack_runtime.precision import is_integer
from edgepack_runtime.subprocesses import run_checked
from edgepack_runtime.verdict import FAILED, Verdict

from .budget import measure
from .errors import EmulationError
from .holdout import CONFIRMATION
from .runtime_wheels import manylinux_platforms

__all__ = ["EmulationError", "prepare", "verify_emulated", "ENV_VERSION", "ARCHES", "EVAL_SAMPLES"]

ENV_VERSION = "aarch64-py311-v1"  # bump when the packages below change: a new cached environment
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
    "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1", "libstdc++6", "libgcc-s1",
    "libcrypt1", "libncursesw6", "libtinfo6", "libreadline8", "libgomp1",
)
# The runtime's own dependencies, and Pillow for its image preprocessing (checked under
# emulation too); each format adds its backend's pins (`emulation_wheels`).
BASE_WHEELS = ("numpy<2", "click", "rich", "pillow")


def wheels() -> tuple[str, ...]:
    """The aarch64 wheels of the emulated environment: numpy, every registered format's backend, the CLI's."""
    from .formats import formats

    return (BASE_WHEELS[0], *(w for f in formats().values() for w in f.emulation_wheels), *BASE_WHEELS[1:])
QEMU = {"aarch64": "qemu-aarch64-static", "x86_64": "qemu-x86_64-static"}
ARCHES = tuple(QEMU)
DEFAULT_CPU = "max"
ARTIFACT_TIMEOUT_S = 900
# Eval samples run per integer artifact under emulation (~0.3-0.7 s each for a MobileNetV2):
# enough for a cosine and an agreement figure, bounded in time.
EVAL_SAMPLES = 64

# Runs inside the emulator, once per artifact (a crashing backend cannot hide the others).
_GUEST = """
import json, sys
import numpy as np
import edgepack_runtime as er
from edgepack_runtime.parity import run_samples
bundle = er.open_bundle(sys.argv[1])
model = er.load(bundle.root, artifact=sys.argv[2], threads=1)
inputs, _ = bundle.golden()
np.savez(sys.argv[3], **run_samples(model.run, inputs))
if len(sys.argv) > 5:  # eval inputs in, outputs out
    with np.load(sys.argv[4]) as data:
        np.savez(sys.argv[5], **run_samples(model.run, {k: data[k] for k in data.files}))
# only what this host does not run as the target is emulated: other kernels
print(json.dumps(er.self_test(model, same_kernels=False).to_dict()))
"""


@dataclass(frozen=True)
class Environment:
    root: Path  # Debian arm64 files (sysroot for qemu -L)
    site: Path  # aarch64 wheels

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / "python3.11"


def cache_dir() -> Path:
    return user_dir("cache", "edgepack") / "emulate" / ENV_VERSION


def _run(argv: list[str], what: str, fix: str, **kw) -> subprocess.CompletedProcess:
    """A setup command: its timeout or non-zero exit is one EmulationError."""
    return run_checked(argv, what, fix, error=EmulationError, **kw)


def prepare(log=lambda _: None) -> Environment:
    """The cached aarch64 environment, built on first use (Debian arm64 debs + aarch64 wheels)."""
    final = cache_dir()
    env = Environment(final / "root", final / "site")
    wanted = wheels()
    ready = final / "ready"
    if ready.is_file() and json.loads(ready.read_text()).get("wheels") == list(wanted):
        return env  # built for these formats; a format registered since rebuilds it
    if shutil.which(QEMU["aarch64"]) is None:
        raise EmulationError(f"{QEMU['aarch64']} is not installed; "
                             "apt-get install qemu-user-static (make setup does, as root)")
    foreign = _run(["dpkg", "--print-foreign-architectures"], "dpkg", "install dpkg (Debian or Ubuntu hosts)",
                   timeout=60).stdout.split()
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
              "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:", *wanted],
             "pip install of aarch64 wheels", "check that pip can reach PyPI", timeout=1800)
        shutil.rmtree(debs)
        (work / "ready").write_text(json.dumps({"debian": DEBIAN_PACKAGES, "wheels": list(wanted)}))
        if final.exists():
            shutil.rmtree(final)
        os.rename(work, final)  # whole or not at all: a half-built cache is never used
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return env


def _guest_runtime(tmp: Path) -> Path:
    """A copy of this edgepack_runtime (pure Python) for the guest's path."""
    source = Path(edgepack_runtime.__file__).resolve().parent
    target = tmp / "guest" / "edgepack_runtime"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target.parent


def _guest_command(arch: str, cpu: str, log) -> tuple[list[str], list[str]]:
    """(argv prefix that starts the guest's Python, extra PYTHONPATH entries)."""
    if shutil.which(QEMU[arch]) is None:
        raise EmulationError(f"{QEMU[arch]} is not installed; "
                             "apt-get install qemu-user-static (make setup does, as root)")
    if arch == "aarch64":
        env = prepare(log)
        return [QEMU[arch], "-cpu", cpu, "-L", str(env.root), str(env.python)], [str(env.site)]
    # Same architecture: this interpreter and its packages, on an emulated CPU model.
    return [QEMU[arch], "-cpu", cpu, sys.executable], []


def _as_json(value) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(value)))


def verify_emulated(bundle_path: Path, cpu: Optional[str] = None, log=lambda _: None, arch: str = "aarch64",
                    evaluation=None, only: Optional[set] = None, budget=None) -> dict:
    """Golden self-test of the built artifacts (all, or the names in `only`) on emulated
    `arch`, vs PyTorch and vs this host. With `evaluation` (validate.Evaluation, at most
    EVAL_SAMPLES used), integer artifacts also measure their fidelity to PyTorch on it,
    judged against `budget` (budget.Budget) in its task's figures."""
    if arch not in QEMU:
        raise EmulationError(f"cannot emulate {arch!r}; choose one of {', '.join(QEMU)}")
    cpu = cpu or DEFAULT_CPU
    command, site = _guest_command(arch, cpu, log)
    bundle = open_bundle(bundle_path)
    bundle.verify_integrity()
    qemu_version = _run([QEMU[arch], "--version"], "qemu", "reinstall qemu-user-static").stdout.splitlines()[0]
    where = f"{arch} (qemu {cpu})"
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgepack-emulate-") as tmp:
        environment = {**os.environ, "PYTHONPATH": ":".join([str(_guest_runtime(Path(tmp))), *site]),
                       "EDGEPACK_TELEMETRY": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        guest = _Guest(command, environment, Path(tmp), where)
        if evaluation is not None:
            np.savez(guest.eval_inputs, **evaluation.inputs)
        for art in bundle.manifest.artifacts:
            if art.status == "ok" and (only is None or art.name in only):
                with_eval = evaluation is not None and is_integer(art.precision)
                log(f"running {art.name} on emulated {where}" + (" with eval samples" if with_eval else ""))
                results.append(_run_artifact(guest, bundle, art.name, art.precision,
                                             evaluation if with_eval else None, budget))
    return {
        "arch": arch, "cpu": cpu, "qemu": qemu_version,
        "environment": ENV_VERSION if arch == "aarch64" else "host python",
        "seconds": round(time.perf_counter() - start, 1),
        "results": [r.to_dict() for r in results],  # Verdict.from_dict reads them
    }


@dataclass(frozen=True)
class _Guest:
    """How to run Python in the emulated guest, and its scratch folder."""

    command: list[str]
    environment: dict
    tmp: Path
    where: str  # "aarch64 (qemu cortex-a76)", for messages and reports

    @property
    def eval_inputs(self) -> Path:
        return self.tmp / "eval-inputs.npz"


def _run_artifact(guest: _Guest, bundle, name: str, precision: str, evaluation, budget) -> Verdict:
    """One artifact's self-test in the guest (and its accuracy on `evaluation`, if given),
    compared with this host's outputs. A failure is recorded, the others still run."""
    out_file, eval_out = guest.tmp / f"{name}.npz", guest.tmp / f"{name}.eval.npz"
    argv = [*guest.command, "-c", _GUEST, str(bundle.root), name, str(out_file)]
    argv += [str(guest.eval_inputs), str(eval_out)] if evaluation is not None else []
    try:
        proc = run_checked(argv, f"{name} on emulated {guest.where}", "run `edgepack build -v` to see the guest",
                           error=EmulationError, skip=("INFO", "qemu-"), env=guest.environment,
                           timeout=ARTIFACT_TIMEOUT_S)
    except EmulationError as exc:
        return Verdict(name, FAILED, error=str(exc))
    if not out_file.exists():
        return Verdict(name, FAILED, error=last_line(proc.stderr, "no output written", skip=("INFO", "qemu-")))
    verdict = Verdict.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    with np.load(out_file) as data:
        emulated = {k: data[k] for k in data.files}
    accuracy = None
    if evaluation is not None:
        with np.load(eval_out) as data:
            # as manifest.json holds it (lists, not tuples): the report is compared with it
            accuracy = _as_json(measure({k: data[k] for k in data.files}, evaluation.outputs, budget,
                                        labels=evaluation.labels, reference_top1=evaluation.reference_top1,
                                        data=evaluation.source, measured_on=guest.where, indicative=False,
                                        groups=evaluation.groups, split=CONFIRMATION))
    inputs, _ = bundle.golden()
    host = run_samples(edgepack_runtime.load(bundle.root, artifact=name, threads=1).run, inputs)
    return dataclasses.replace(verdict, diff_vs_host=max_abs_diff(emulated, host), accuracy=accuracy)
