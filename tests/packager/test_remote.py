"""Deploy and bench over a real OpenSSH server on 127.0.0.1, acting as two devices."""

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

from ..conftest import DIGITS_MODEL, free_port
from .test_cli import one_line_error, run_cli

SSHD = "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd on two loopback ports with a throwaway host key, client key and config."""
    if not Path(SSHD).exists():
        pytest.fail("OpenSSH server not installed: run `make setup` as root (scripts/setup-system.sh installs it)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    ports = [free_port(), free_port()]
    (d / "sshd_config").write_text("\n".join([
        *(f"Port {p}" for p in ports), "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}",
        f"PidFile {d / 'sshd.pid'}", f"AuthorizedKeysFile {d / 'authorized_keys'}", "StrictModes no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", ""]))
    (d / "ssh_config").write_text("Host 127.0.0.1\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                                  "  LogLevel ERROR\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", ports[1]), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    os.environ["EDGEPACK_SSH_CONFIG"] = str(d / "ssh_config")
    user = getpass.getuser()
    inventory = d / "devices.toml"
    inventory.write_text("".join(
        f'[[device]]\nname = "loop-{tag}"\nhost = "127.0.0.1"\nuser = "{user}"\nport = {port}\n'
        f'identity = "{d / "client_key"}"\nroot = "{d / ("device-" + tag)}"\n\n'
        for tag, port in zip("ab", ports)))
    yield {"dir": d, "ports": ports, "inventory": inventory, "key": d / "client_key", "user": user}
    os.environ.pop("EDGEPACK_SSH_CONFIG", None)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def onnx_bundle(digits_data, tmp_path_factory):
    import edgepack

    out = tmp_path_factory.mktemp("remote") / "digits-onnx"
    return edgepack.build(DIGITS_MODEL, out, "host", formats=["onnx"], weights=digits_data / "weights.safetensors",
                          calibration=digits_data / "calib.npz", eval_data=digits_data / "eval.npz").path


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
    bad.write_text('[[device]]\nname = "a"\n')
    with pytest.raises(DeviceError, match="device #1 is missing host"):
        load_inventory(bad)
    bad.write_text('[[device]]\nname = "a"\nhost = "h"\nport = "2222"\n')  # types are checked too
    with pytest.raises(DeviceError, match=r"device #1.port must be a non-negative integer"):
        load_inventory(bad)


def test_deploy_installs_and_verifies_on_the_device(sshd, onnx_bundle, tmp_path):
    """--offline: every wheel is shipped and installed with --no-index (the device needs no network)."""
    root = tmp_path / "device"
    args = ("deploy", onnx_bundle, "--host", f"{sshd['user']}@127.0.0.1:{sshd['ports'][0]}",
            "--identity", sshd["key"], "--remote-root", root, "--offline")
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "passed" in result.output and "copying bundle" in result.output
    remote = root / "bundles" / "digits-onnx"
    assert (remote / "manifest.json").read_bytes() == (onnx_bundle / "manifest.json").read_bytes()
    assert (root / "venv" / "bin" / "edgepack-runtime").exists()
    shipped = {p.name.split("-")[0].lower() for p in (root / "wheels").glob("*.whl")}
    assert {"edgepack_runtime", "numpy", "onnxruntime", "click", "rich"} <= shipped
    again = run_cli(*args)  # the same bundle is already there: not copied again, verified again
    assert again.exit_code == 0 and "copying bundle" not in again.output and "verified" in again.output


def test_bench_across_two_devices_in_parallel(sshd, onnx_bundle, tmp_path):
    out = tmp_path / "results"
    result = run_cli("bench", onnx_bundle, "--devices", sshd["inventory"], "--threads", "1", "--runs", "20",
                     "--min-seconds", "0", "-o", out)
    assert result.exit_code == 0, result.output
    docs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(docs) == {"loop-a", "loop-b"}
    for name, doc in docs.items():
        assert doc["device"]["name"] == name  # each device named as in the inventory
        assert {r["artifact"] for r in doc["results"]} == {"onnx-fp32", "onnx-int8"}
    assert "loop-a" in result.output and "loop-b" in result.output and "p50 ms" in result.output


def test_an_unreachable_device_is_reported_while_the_others_complete(sshd, onnx_bundle, tmp_path):
    inventory = tmp_path / "devices.toml"
    dead_port = free_port()  # nothing listens there
    inventory.write_text(sshd["inventory"].read_text().split("\n\n")[0] + "\n\n" +
                         f'[[device]]\nname = "gone"\nhost = "127.0.0.1"\nport = {dead_port}\n'
                         f'identity = "{sshd["key"]}"\n')
    out = tmp_path / "results"
    result = run_cli("bench", onnx_bundle, "--devices", inventory, "--threads", "1", "--runs", "5",
                     "--min-seconds", "0", "-o", out)
    one_line_error(result, "1 of 2 device(s) failed (gone)")
    assert "gone: cannot connect" in result.output
    assert [p.stem for p in out.glob("*.json")] == ["loop-a"]  # partial results kept
