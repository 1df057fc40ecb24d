"""Deploy bundles to devices and benchmark them there, over OpenSSH (ssh/scp).

Each device gets, under its `root` (default ~/.edgepack): `venv/` with edgepack-runtime
installed from a wheel built here and copied over, `bundles/<name>/`, `wheels/`, `results/`.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import edgepack_runtime
from edgepack_runtime.bundle import Bundle, open_bundle
from edgepack_runtime.errors import last_line

from .devices import Device, DeviceError

__all__ = ["build_runtime_wheel", "deploy", "remote_bench", "bench_devices", "DeviceOutcome", "SSH_CONFIG_ENV"]

SSH_CONFIG_ENV = "EDGEPACK_SSH_CONFIG"  # an ssh_config file passed as -F to every ssh/scp
CONNECT_TIMEOUT_S = 15
INSTALL_TIMEOUT_S = 1800
BENCH_TIMEOUT_S = 3600


def _options(device: Device) -> list[str]:
    opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "StrictHostKeyChecking=accept-new"]
    if os.environ.get(SSH_CONFIG_ENV):
        opts = ["-F", os.environ[SSH_CONFIG_ENV], *opts]
    if device.identity:
        opts += ["-i", os.path.expanduser(device.identity), "-o", "IdentitiesOnly=yes"]
    return opts


def _remote_path(path: str) -> str:
    """Quote for the remote shell, but let it expand a leading ~."""
    return "~/" + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)


def ssh(device: Device, command: str, timeout: float = 600) -> str:
    """Run `command` on the device; its stdout, or DeviceError with the reason."""
    argv = ["ssh", *_options(device), "-p", str(device.port), device.destination, command]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{device.name}: `{command[:60]}…` took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        reason = last_line(proc.stderr or proc.stdout, f"exit code {proc.returncode}")
        what = "cannot connect" if proc.returncode == 255 else "command failed"
        raise DeviceError(f"{device.name}: {what}: {reason}")
    return proc.stdout


def _scp(device: Device, sources: Sequence[str], destination: str) -> None:
    argv = ["scp", "-q", "-r", *_options(device), "-P", str(device.port), *sources, destination]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if proc.returncode != 0:
        raise DeviceError(f"{device.name}: copy failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")


def build_runtime_wheel(out_dir: Path) -> Path:
    """A wheel of the edgepack-runtime installed here, built from its source tree."""
    source = Path(edgepack_runtime.__file__).resolve().parents[1]
    if not (source / "pyproject.toml").is_file():
        raise DeviceError(f"cannot find edgepack-runtime's source (looked in {source}); install edgepack from "
                          "its repository (`make setup`) to deploy")
    with tempfile.TemporaryDirectory(prefix="edgepack-wheel-") as tmp:
        copy = Path(tmp) / "runtime"  # build from a copy: no build/ directory left in the source
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(copy)],
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    wheels = sorted(out_dir.glob("edgepack_runtime-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DeviceError(f"building the edgepack-runtime wheel failed: {proc.stderr.strip()[-300:]}")
    return wheels[-1]


@dataclass(frozen=True)
class Deployment:
    device: Device
    root: str  # absolute, on the device
    bundle: str  # the bundle directory on the device
    runtime: str  # the edgepack-runtime executable on the device
    verify_output: str


def _extras(bundle: Bundle) -> str:
    """The edgepack-runtime extras the bundle needs: its artifacts' backends (each format names
    its own), and Pillow or tokenizers when it takes raw images or texts."""
    from .formats import formats

    known = formats()
    extras = {known[a.format].runtime_extra for a in bundle.manifest.artifacts if a.status == "ok" and a.format in known}
    pre = bundle.manifest.preprocessing
    if pre is not None:
        extras.add("image" if pre.image is not None else "text")
    return ",".join(sorted(extras))


def manylinux_platforms(machine: str) -> list[str]:
    """pip --platform tags a current glibc Linux on `machine` accepts (Debian 12: glibc 2.36)."""
    return [f"manylinux2014_{machine}"] + [f"manylinux_2_{v}_{machine}" for v in (17, 24, 26, 27, 28, 31, 34, 35, 36)]


def download_wheels(wheel: Path, extras: str, machine: str, python_version: str, out_dir: Path) -> Path:
    """Every wheel the device needs to install the runtime offline, for its CPU and Python."""
    out_dir.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in manylinux_platforms(machine) for a in ("--platform", p)]
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(out_dir), *platforms,
                           "--python-version", python_version, "--implementation", "cp", "--only-binary=:all:",
                           f"{wheel}[{extras}]"], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if proc.returncode != 0:
        raise DeviceError(f"downloading wheels for {machine}/cp{python_version} failed: "
                          f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return out_dir


def deploy(bundle_path: Path, device: Device, wheel: Path, log: Callable[[str], None] = lambda _: None,
           offline: bool = False) -> Deployment:
    """Copy the bundle and the runtime to the device, install, and run `verify` there.

    `offline`: also download, here, every wheel the runtime needs for the device's CPU and
    Python, copy them over and install with `--no-index`: the device needs no network."""
    bundle = open_bundle(bundle_path)
    bundle.verify_integrity()  # never ship a damaged bundle
    root = ssh(device, f"mkdir -p {_remote_path(device.root)} && cd {_remote_path(device.root)} && pwd").strip()
    name = bundle.manifest.name
    remote_bundle = f"{root}/bundles/{name}"
    q = shlex.quote
    ssh(device, f"mkdir -p {q(root)}/bundles {q(root)}/wheels {q(root)}/results")
    current = ssh(device, f"sha256sum {q(remote_bundle)}/manifest.json 2>/dev/null || true").split()
    if current[:1] != [bundle.sha256]:
        log(f"{device.name}: copying bundle {name}")
        partial = f"{root}/bundles/.{name}.partial-{os.getpid()}"
        ssh(device, f"rm -rf {q(partial)}")
        _scp(device, [str(bundle.root)], f"{device.destination}:{partial}")
        # swap in whole: a half-copied bundle never sits at the final path
        ssh(device, f"rm -rf {q(remote_bundle)} && mv {q(partial)} {q(remote_bundle)}")
    log(f"{device.name}: installing edgepack-runtime[{_extras(bundle)}]" + (" offline" if offline else ""))
    _scp(device, [str(wheel)], f"{device.destination}:{root}/wheels/")
    remote_wheel = f"{root}/wheels/{wheel.name}"
    venv = f"{root}/venv"
    ssh(device, f"test -x {q(venv)}/bin/python || {device.python} -m venv {q(venv)}", timeout=INSTALL_TIMEOUT_S)
    pip = f"{q(venv)}/bin/python -m pip install -q --disable-pip-version-check"
    if offline:
        machine, version = ssh(device, f"{q(venv)}/bin/python -c 'import platform, sys; "
                                       f"print(platform.machine(), \"%d%d\" % sys.version_info[:2])'").split()
        with tempfile.TemporaryDirectory(prefix="edgepack-wheels-") as tmp:
            wheels = download_wheels(wheel, _extras(bundle), machine, version, Path(tmp) / "wheels")
            _scp(device, [str(p) for p in sorted(wheels.iterdir())], f"{device.destination}:{root}/wheels/")
        pip += f" --no-index --find-links {q(root)}/wheels"
    ssh(device, f"{pip} {q(remote_wheel + '[' + _extras(bundle) + ']')} && "
                f"{pip} --force-reinstall --no-deps {q(remote_wheel)}", timeout=INSTALL_TIMEOUT_S)
    runtime = f"{venv}/bin/edgepack-runtime"
    log(f"{device.name}: verifying")
    try:
        output = ssh(device, f"EDGEPACK_TELEMETRY=0 {q(runtime)} verify {q(remote_bundle)}", timeout=INSTALL_TIMEOUT_S)
    except DeviceError as exc:
        raise DeviceError(f"{exc} (the bundle does not verify on this device)") from None
    return Deployment(device, root, remote_bundle, runtime, output)


def remote_bench(deployment: Deployment, out_dir: Path, bench_args: Sequence[str] = ()) -> Path:
    """Run `edgepack-runtime bench` on the device and fetch the result JSON."""
    device, q = deployment.device, shlex.quote
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    remote = f"{deployment.root}/results/{Path(deployment.bundle).name}-{stamp}.json"
    ssh(device, f"EDGEPACK_TELEMETRY=0 EDGEPACK_DEVICE_NAME={q(device.name)} {q(deployment.runtime)} bench "
                f"{q(deployment.bundle)} {' '.join(q(a) for a in bench_args)} -o {q(remote)}", timeout=BENCH_TIMEOUT_S)
    out_dir.mkdir(parents=True, exist_ok=True)
    local = out_dir / f"{device.name.replace('/', '_').replace('@', '_at_').replace(':', '_')}.json"
    _scp(device, [f"{device.destination}:{remote}"], str(local))
    return local


@dataclass(frozen=True)
class DeviceOutcome:
    device: Device
    result: Optional[Path] = None
    error: Optional[str] = None


def bench_devices(bundle_path: Path, devices: Sequence[Device], out_dir: Path, bench_args: Sequence[str] = (),
                  log: Callable[[str], None] = lambda _: None, offline: bool = False) -> list[DeviceOutcome]:
    """Deploy and benchmark on every device in parallel; a failing device does not stop the others."""
    with tempfile.TemporaryDirectory(prefix="edgepack-deploy-") as tmp:
        wheel = build_runtime_wheel(Path(tmp))

        def one(device: Device) -> DeviceOutcome:
            try:
                deployment = deploy(bundle_path, device, wheel, log, offline)
                log(f"{device.name}: benchmarking")
                return DeviceOutcome(device, result=remote_bench(deployment, out_dir, bench_args))
            except DeviceError as exc:
                return DeviceOutcome(device, error=str(exc))

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(devices))) as pool:
            return list(pool.map(one, devices))
