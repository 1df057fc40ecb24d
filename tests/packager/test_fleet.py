"""Fleets (issue #14): real ansible-core against real sshd processes on 127.0.0.1 acting as
devices on different ports, with different targets, one of them unreachable."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edgepack.devices import DeviceError, load_inventory, parse_host
from edgepack_runtime.signature import sign_bundle

from ..conftest import DIGITS_MODEL, free_port
from ..runtime.test_signing import _keys, swap_model_and_golden
from ..runtime.test_store import new_version
from .test_cli import one_line_error, run_cli

SSHD = "/usr/sbin/sshd"
RUNTIME = "venv/bin/edgepack-runtime"


def _listening(port: int, timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"sshd is not listening on {port}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Three sshd processes, one per device (a, b: target host; c: raspberry-pi/5), and a
    fourth device whose port nothing listens on, in an INI inventory with groups."""
    if not Path(SSHD).exists():
        pytest.fail("OpenSSH server not installed: run `make setup` as root (scripts/setup-system.sh installs it)")
    d = tmp_path_factory.mktemp("lab")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    ports, procs = {}, []
    for name in "abc":
        ports[name] = free_port()
        (d / f"sshd_{name}").write_text("\n".join([
            f"Port {ports[name]}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}",
            f"PidFile {d / f'sshd_{name}.pid'}", f"AuthorizedKeysFile {d / 'authorized_keys'}", "StrictModes no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "MaxStartups 50", ""]))
        procs.append(subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / f"sshd_{name}")], stderr=subprocess.DEVNULL))
    for port in ports.values():
        _listening(port)
    ports["gone"] = free_port()
    (d / "ssh_config").write_text("Host 127.0.0.1\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                                  "  LogLevel ERROR\n  ConnectTimeout 5\n")
    user = getpass.getuser()

    def host(name: str, target: str = "") -> str:
        return (f"{name} ansible_host=127.0.0.1 ansible_port={ports[name]} ansible_user={user} "
                f"edgepack_root={d / ('device-' + name)} edgepack_telemetry_db={d / ('telemetry-' + name + '.sqlite')} "
                f"edgepack_trust_file={d / ('trust-' + name + '.toml')}"
                + (f" edgepack_target={target}" if target else ""))

    inventory = d / "inventory.ini"
    inventory.write_text("\n".join([
        "[lab]", host("a"), host("b"), "", "[pis]", host("c", "raspberry-pi/5"), "", "[gone]", host("gone"), "",
        "[all:vars]", f"ansible_ssh_private_key_file={d / 'client_key'}", "edgepack_textfile_cron=false",
        "edgepack_target=host", "ansible_python_interpreter=python3", ""]))
    os.environ["EDGEPACK_SSH_CONFIG"] = str(d / "ssh_config")
    yield {"dir": d, "ports": ports, "inventory": inventory, "key": d / "client_key", "user": user}
    os.environ.pop("EDGEPACK_SSH_CONFIG", None)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def onnx_bundle(digits_data, tmp_path_factory):
    import edgepack

    out = tmp_path_factory.mktemp("fleet") / "digits-onnx"
    return edgepack.build(DIGITS_MODEL, out, "host", formats=["onnx"], weights=digits_data / "weights.safetensors",
                          calibration=digits_data / "calib.npz", eval_data=digits_data / "eval.npz").path


def _current(lab, device: str, name: str = "digits-onnx") -> str:
    return (lab["dir"] / f"device-{device}" / "store" / name / "current").resolve().name


def test_host_specs_and_inventory_errors(tmp_path):
    d = parse_host("pi@raspberrypi.local:2222")
    assert (d.user, d.host, d.port) == ("pi", "raspberrypi.local", 2222)
    assert parse_host("[::1]:22").host == "::1"
    with pytest.raises(DeviceError, match="user@host"):
        parse_host("pi@host:port")
    bad = tmp_path / "devices.toml"
    bad.write_text('[[device]]\nname = "a"\nhost = "h"\nidentiy = "k"\n')
    with pytest.raises(DeviceError, match="unknown key 'identiy'; did you mean 'identity'"):
        load_inventory(bad)
    bad.write_text('[[device]]\nname = "a"\nhost = "h"\nport = "2222"\n')  # types are checked too
    with pytest.raises(DeviceError, match=r"device #1.port must be a non-negative integer"):
        load_inventory(bad)
    missing = run_cli("deploy", tmp_path, "--inventory", tmp_path / "nope.ini")
    assert missing.exit_code == 1
    both = run_cli("deploy", tmp_path, "--inventory", tmp_path / "x.ini", "--host", "pi@h")
    one_line_error(both, "one of them")


@pytest.mark.slow  # ansible over ssh to a local lab: minutes
def test_one_command_deploys_a_group_in_parallel_and_an_unreachable_host_fails_alone(lab, onnx_bundle):
    result = run_cli("deploy", onnx_bundle, "--inventory", lab["inventory"], "--limit", "lab:gone")
    one_line_error(result, "deployment failed on 1 of 3 host(s) (gone: unreachable)")
    version = _current(lab, "a")
    assert _current(lab, "b") == version and len(version) == 12
    for line in ("a ", "b "):
        row = next(r for r in result.output.splitlines() if r.startswith(f"│ {line}"))
        assert version in row and "passed" in row and "current" in row
    assert "unreachable" in next(r for r in result.output.splitlines() if r.startswith("│ gone"))
    # The whole inventory: c is a Raspberry Pi, this bundle is for `host`: skipped, not deployed.
    everywhere = run_cli("deploy", onnx_bundle, "--inventory", lab["inventory"], "--limit", "all:!gone")
    assert everywhere.exit_code == 0, everywhere.output
    assert "edgepack_target is raspberry-pi/5" in everywhere.output
    assert not (lab["dir"] / "device-c" / "store").exists()


@pytest.fixture
def trust_policies(lab):
    """The devices' trust files (each device has its own): gone after the test."""
    yield
    for name in "abc":
        (lab["dir"] / f"trust-{name}.toml").unlink(missing_ok=True)


@pytest.mark.slow  # ansible over ssh to a local lab: minutes
def test_signed_bundles_tampering_and_rollback_across_the_group(lab, onnx_bundle, tmp_path, trust_policies):
    private, public = _keys(tmp_path, "release")
    v1 = new_version(onnx_bundle, tmp_path / "v1", "2026-03-01T00:00:00+00:00")
    v2 = new_version(onnx_bundle, tmp_path / "v2", "2026-03-02T00:00:00+00:00")
    unsigned = run_cli("deploy", v1, "--inventory", lab["inventory"], "--limit", "lab", "--require-signature",
                       "--trusted-key", public)
    one_line_error(unsigned, "deployment failed on 2 of 2 host(s)")
    assert "not signed" in unsigned.output
    for bundle in (v1, v2):
        sign_bundle(bundle, private)
        ok = run_cli("deploy", bundle, "--inventory", lab["inventory"], "--limit", "lab", "--require-signature",
                     "--trusted-key", public)
        assert ok.exit_code == 0, ok.output
    good = _current(lab, "a")
    tampered = Path(shutil.copytree(v2, tmp_path / "tampered"))
    swap_model_and_golden(tampered)
    refused = run_cli("deploy", tampered, "--inventory", lab["inventory"], "--limit", "lab", "--require-signature",
                      "--trusted-key", public)
    one_line_error(refused, "deployment failed on 2 of 2 host(s)")
    assert "modified after signing" in refused.output
    assert _current(lab, "a") == good == _current(lab, "b")  # the verified version keeps serving
    back = run_cli("rollback", "digits-onnx", "--inventory", lab["inventory"], "--limit", "lab")
    assert back.exit_code == 0, back.output
    assert _current(lab, "a") != good and _current(lab, "a") == _current(lab, "b")
    shown = run_cli("status", "--inventory", lab["inventory"], "--limit", "lab", "--json")
    stores = json.loads(shown.stdout)
    assert ({h: s["bundles"][0]["active"] for h, s in stores.items()}
            == {"a": _current(lab, "a"), "b": _current(lab, "b")})
    verified = run_cli("verify", v1, "--inventory", lab["inventory"], "--limit", "lab")
    assert verified.exit_code == 0 and verified.output.count("verified") >= 2, verified.output
    assert 'require_signature = true' in (lab["dir"] / "trust-a.toml").read_text()


@pytest.mark.slow  # ansible over ssh to a local lab: minutes
def test_bench_and_fleet_telemetry(lab, onnx_bundle, tmp_path):
    out = tmp_path / "results"
    result = run_cli("bench", onnx_bundle, "--inventory", lab["inventory"], "--limit", "lab", "--threads", "1",
                     "--runs", "20", "--min-seconds", "0", "-o", out)
    assert result.exit_code == 0, result.output
    docs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(docs) == {"a", "b"}
    for name, doc in docs.items():
        assert doc["device"]["name"] == name  # each device named as in the inventory
        assert {r["artifact"] for r in doc["results"]} == {"onnx-fp32", "onnx-int8"}
    # Some inferences on device a (its own telemetry database), none on b.
    device = lab["dir"] / "device-a"
    x = tmp_path / "x.npy"
    import numpy as np

    np.save(x, np.zeros((1, 1, 8, 8), np.float32))
    env = {**os.environ, "EDGEPACK_TELEMETRY_DB": str(lab["dir"] / "telemetry-a.sqlite")}
    for _ in range(3):
        subprocess.run([device / RUNTIME, "run", device / "store" / "digits-onnx" / "current", "--input", f"image={x}"],
                       check=True, capture_output=True, env=env)
    textfiles = tmp_path / "textfile"
    collected = run_cli("telemetry", "--inventory", lab["inventory"], "--limit", "lab", "--format", "json",
                        "--textfile-dir", textfiles)
    assert collected.exit_code == 0, collected.output
    rows = json.loads(collected.stdout)["rows"]
    assert [(r["host"], r["bundle"].split("@")[0], r["count"]) for r in rows] == [("a", "digits-onnx", 3)]
    assert rows[0]["p50_ms"] > 0 and rows[0]["error_rate"] == 0
    assert "edgepack_inferences_total" in (textfiles / "edgepack.prom").read_text()


@pytest.mark.slow  # ansible over ssh to a local lab: minutes
def test_host_and_devices_toml_take_the_same_path_offline(lab, onnx_bundle, tmp_path):
    """--host with --offline: every wheel shipped, installed with --no-index."""
    root = tmp_path / "device"
    result = run_cli("deploy", onnx_bundle, "--host", f"{lab['user']}@127.0.0.1:{lab['ports']['a']}",
                     "--identity", lab["key"], "--remote-root", root, "--offline")
    assert result.exit_code == 0, result.output
    assert (root / "store" / "digits-onnx" / "current" / "manifest.json").read_bytes() == \
        (onnx_bundle / "manifest.json").read_bytes()
    shipped = {p.name.split("-")[0].lower() for p in (root / "wheels").glob("*.whl")}
    assert {"edgepack_runtime", "numpy", "onnxruntime", "click"} <= shipped
    assert "rich" not in shipped  # the device's runtime prints plain tables: no rich, no pygments
    devices = tmp_path / "devices.toml"
    devices.write_text(f'[[device]]\nname = "toml-a"\nhost = "127.0.0.1"\nuser = "{lab["user"]}"\n'
                       f'port = {lab["ports"]["b"]}\nidentity = "{lab["key"]}"\nroot = "{tmp_path / "toml"}"\n')
    devices.write_text(devices.read_text() + f'\n[[device]]\nname = "toml-gone"\nhost = "127.0.0.1"\n'
                       f'port = {lab["ports"]["gone"]}\nidentity = "{lab["key"]}"\n')
    again = run_cli("deploy", onnx_bundle, "--devices", devices, "--limit", "toml-a")  # --limit works here too
    assert again.exit_code == 0 and "toml-a" in again.output and "toml-gone" not in again.output, again.output
