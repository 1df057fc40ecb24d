"""Fleets through Ansible (docs/fleet.md): the inventory says which devices, ansible-playbook
runs the `edgepack_device` role that ships in edgepack/ansible on each of them.

Every device command goes this one way: `--inventory` takes anything Ansible accepts
(resolved by `ansible-inventory` itself, `--limit` included); `--host user@host[:port]`
and `--devices devices.toml` are written out as a small inventory first.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from edgepack_runtime.subprocesses import run_checked

from .devices import Device
from .errors import DeviceError

__all__ = ["ANSIBLE_DIR", "Host", "HostOutcome", "resolve_hosts", "write_inventory", "run_step", "ansible_roles_path"]

log = logging.getLogger(__name__)
ANSIBLE_DIR = Path(__file__).resolve().parent / "ansible"
RESULTS_ENV = "EDGEPACK_ANSIBLE_RESULTS"
SSH_CONFIG_ENV = "EDGEPACK_SSH_CONFIG"  # an ssh_config file for every connection (tests, bastions)
STEP_TIMEOUT_S = 3600
MAX_DEFAULT_FORKS = 50


def ansible_roles_path() -> Path:
    """Where the edgepack_device role lives: add it to ANSIBLE_ROLES_PATH for your playbooks."""
    return ANSIBLE_DIR / "roles"


def _tool(name: str) -> str:
    """An Ansible executable: next to this Python first (its venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise DeviceError(f"{name} is not installed; fleet commands run Ansible: pip install 'edgepack[fleet]'")
    return found


@dataclass(frozen=True)
class Host:
    name: str
    target: Optional[str] = None  # edgepack_target from the inventory (host or group var)


@dataclass
class HostOutcome:
    host: str
    status: str  # ok, failed, unreachable, skipped
    error: Optional[str] = None
    steps: dict = field(default_factory=dict)  # "install": its stdout, ...
    seconds: Optional[float] = None

    def step_json(self, step: str) -> Optional[dict]:
        try:
            return json.loads(self.steps[step])
        except (KeyError, ValueError):
            return None


def resolve_hosts(inventory: Path, limit: Optional[str] = None) -> list[Host]:
    """The inventory's hosts (after `--limit`), as Ansible itself reads the inventory."""
    argv = [_tool("ansible-inventory"), "-i", str(inventory), "--list"] + (["--limit", limit] if limit else [])
    proc = _run(argv, _env(), 300, f"ansible-inventory on {inventory}")
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    if proc.returncode != 0 or not isinstance(data, dict):
        reason = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), "no output")
        raise DeviceError(f"ansible-inventory cannot read {inventory}: {reason.strip()}")
    names: list[str] = []
    for group, body in data.items():
        if group != "_meta" and isinstance(body, dict):
            names += [h for h in body.get("hosts", []) if h not in names]
    if not names:
        raise DeviceError(f"no hosts in {inventory}" + (f" match --limit {limit!r}" if limit else "")
                          + "; check the inventory with `ansible-inventory -i INVENTORY --graph`")
    hostvars = data.get("_meta", {}).get("hostvars", {})
    return [Host(name, hostvars.get(name, {}).get("edgepack_target")) for name in names]


def write_inventory(devices: Sequence[Device], path: Path) -> Path:
    """`--host` / devices.toml devices as an Ansible YAML inventory (JSON is YAML)."""
    hosts = {}
    for d in devices:
        # The device's Python runs Ansible's modules too (interpreter discovery can pick a broken one).
        entry = {"ansible_host": d.host, "ansible_port": d.port, "ansible_python_interpreter": d.python,
                 "edgepack_python": d.python, "edgepack_root": d.root}
        if d.user:
            entry["ansible_user"] = d.user
        if d.identity:
            entry["ansible_ssh_private_key_file"] = os.path.expanduser(d.identity)
        if d.target:
            entry["edgepack_target"] = d.target
        hosts[d.name] = entry
    path.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))
    return path


def _run(argv: list, env: dict, timeout: float, what: str) -> subprocess.CompletedProcess:
    """A fleet command (ansible): a timeout or a missing program is one DeviceError; its exit
    code is the caller's to read (ansible reports per host)."""
    return run_checked(argv, what, "`edgepack -vv` shows where it was", error=DeviceError, check=False, env=env,
                       timeout=timeout)


def _env(results: Optional[Path] = None) -> dict:
    env = {**os.environ,
           "ANSIBLE_ROLES_PATH": str(ansible_roles_path()),
           "ANSIBLE_CALLBACK_PLUGINS": str(ANSIBLE_DIR / "callback_plugins"),
           "ANSIBLE_CALLBACKS_ENABLED": "edgepack_results",
           "ANSIBLE_RETRY_FILES_ENABLED": "false",
           "ANSIBLE_NOCOLOR": "1"}
    env.setdefault("ANSIBLE_PYTHON_INTERPRETER", "auto_silent")
    # Never a prompt nobody sees: no passwords, and a new host key is accepted on first
    # contact and checked from then on (a changed one fails the host).
    env.setdefault("ANSIBLE_SSH_EXTRA_ARGS", "-o BatchMode=yes -o StrictHostKeyChecking=accept-new")
    if os.environ.get(SSH_CONFIG_ENV):
        env["ANSIBLE_SSH_ARGS"] = f"-F {os.environ[SSH_CONFIG_ENV]} -o ControlMaster=auto -o ControlPersist=60s"
    if results is not None:
        env[RESULTS_ENV] = str(results)
    return env


def run_step(step: str, inventory: Path, hosts: Sequence[str], extra_vars: dict,
             forks: Optional[int] = None, everyone: bool = False) -> dict[str, HostOutcome]:
    """Run edgepack/ansible/STEP.yml on `hosts` in parallel (`forks`); each host's outcome.
    `everyone`: `hosts` are all the inventory's (no --limit: a name like user@host:22, which
    --host makes, is no valid host pattern). Ansible's own output goes to the log
    (`edgepack -vv` shows it)."""
    with tempfile.TemporaryDirectory(prefix="edgepack-ansible-") as tmp:
        variables, results = Path(tmp) / "vars.json", Path(tmp) / "results.json"
        variables.write_text(json.dumps(extra_vars))
        forks = forks or min(max(len(hosts), 1), MAX_DEFAULT_FORKS)
        argv = [_tool("ansible-playbook"), "-i", str(inventory), str(ANSIBLE_DIR / f"{step}.yml"),
                "--forks", str(forks), "-e", f"@{variables}"] + ([] if everyone else ["--limit", ",".join(hosts)])
        log.info(f"ansible-playbook {step}.yml on {len(hosts)} host(s), {forks} fork(s)")
        proc = _run(argv, _env(results), STEP_TIMEOUT_S, f"ansible-playbook {step}.yml")
        log.debug(proc.stdout + proc.stderr)
        if not results.is_file():
            reason = next((line for line in reversed((proc.stderr + proc.stdout).splitlines()) if line.strip()), "")
            raise DeviceError(f"ansible-playbook {step}.yml did not run: {reason.strip()[:300]}")
        recorded = json.loads(results.read_text())
    outcomes = {}
    for name in hosts:
        got = recorded.get(name)
        if got is None:  # Ansible never reached it (e.g. an earlier play failed): say so
            outcomes[name] = HostOutcome(name, "failed", "ansible did not run the step on this host")
        else:
            outcomes[name] = HostOutcome(name, got["status"], got.get("error"), got.get("steps", {}),
                                         got.get("seconds"))
    return outcomes
