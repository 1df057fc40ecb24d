"""The bundle store on a device (issue #14): versions side by side, verified before they
become current, rollback, and a server that follows `current` without failing a request."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import edgepack_runtime
from edgepack_runtime.signature import SignatureError
from edgepack_runtime.store import StoreError, activate, install, rollback, status

from .test_serve import CLI, Server

NAME = "host"  # the session's digits bundle, built for target host


def new_version(bundle: Path, where: Path, created: str) -> Path:
    """The same bundle as another build would make it: a new manifest (so a new version)."""
    copy = Path(shutil.copytree(bundle, where))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["created"] = created
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


def broken_version(bundle: Path, where: Path) -> Path:
    """A new version whose ONNX file was damaged in transit (its sha256 no longer matches)."""
    copy = new_version(bundle, where, "2026-01-02T00:00:00+00:00")
    path = copy / "model.fp32.onnx"
    path.write_bytes(path.read_bytes()[:-64])
    return copy


@pytest.fixture
def versions(digits_bundle, tmp_path):
    return (new_version(digits_bundle, tmp_path / "a", "2026-01-01T00:00:00+00:00"),
            new_version(digits_bundle, tmp_path / "b", "2026-01-01T00:00:01+00:00"),
            new_version(digits_bundle, tmp_path / "c", "2026-01-01T00:00:02+00:00"))


def test_install_activates_only_verified_versions_and_rolls_back(versions, digits_bundle, tmp_path):
    store = tmp_path / "store"
    a, b, c = (install(v, store) for v in versions)
    assert all(x.verified and x.active for x in (a, b, c)) and len({a.version, b.version, c.version}) == 3
    home = store / NAME
    assert (home / "current").resolve().name == c.version
    broken = install(broken_version(digits_bundle, tmp_path / "broken"), store)
    assert not broken.verified and not broken.active and "model.fp32.onnx" in broken.reason
    assert (home / "current").resolve().name == c.version  # the failed version changed nothing
    assert sorted(p.name for p in (home / "versions").iterdir()) == sorted([a.version, b.version, c.version])
    assert rollback(store, NAME) == b.version
    assert rollback(store, NAME) == c.version  # rollback of a rollback: the version before
    assert activate(store, NAME, a.version) == a.version
    with pytest.raises(StoreError, match="no version"):
        activate(store, NAME, "0" * 12)
    listed = status(store)[0]
    assert listed["active"] == a.version
    assert {v["version"] for v in listed["versions"]} == {a.version, b.version, c.version}
    assert all(v["verification"]["passed"] for v in listed["versions"])
    with edgepack_runtime.load(home / "current") as model:  # what is current loads and runs
        assert model.bundle.sha256.startswith(a.version)


def test_only_the_last_n_versions_are_kept(versions, tmp_path):
    store = tmp_path / "store"
    done = [install(v, store, keep=2) for v in versions]
    kept = {p.name for p in (store / NAME / "versions").iterdir()}
    assert kept == {done[1].version, done[2].version}


def test_the_cli_says_it_in_one_line(versions, digits_bundle, tmp_path):
    store = tmp_path / "store"
    ok = subprocess.run([CLI, "install", versions[0], "--store", store, "--json"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["active"], ok.stderr
    bad = subprocess.run([CLI, "install", broken_version(digits_bundle, tmp_path / "broken"), "--store", store],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "current version keeps serving" in bad.stderr and len(bad.stderr.splitlines()) == 1
    none = subprocess.run([CLI, "rollback", NAME, "--store", store], capture_output=True, text=True)
    assert none.returncode == 1 and "no earlier verified version" in none.stderr
    shown = subprocess.run([CLI, "status", "--store", store], capture_output=True, text=True)
    assert shown.returncode == 0 and "active" in shown.stdout


def test_the_server_switches_versions_under_load_without_failing_a_request(versions, digits_bundle, tmp_path):
    """Clients keep sending while versions are installed, a broken one is refused, and the
    last is rolled back: every request answers 200, from the version current when it started."""
    store = tmp_path / "store"
    first = install(versions[0], store)
    server = Server(store / NAME / "current", tmp_path, "--max-concurrency", "64")
    x = edgepack_runtime.open_bundle(digits_bundle).golden()[0]["image"][0]
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            start = time.perf_counter()
            status_code, _, _ = server.predict(x)
            described = server.get("/v1/model")[1]
            results.append((start, status_code, json.loads(described)["bundle_sha256"][:12]))

    def served() -> str:
        return json.loads(server.get("/v1/model")[1])["bundle_sha256"][:12]

    def wait_for(version: str) -> float:
        deadline = time.time() + 30
        while served() != version:
            assert time.time() < deadline, f"the server never switched to {version}"
            time.sleep(0.05)
        return time.perf_counter()

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(client)
            time.sleep(1.0)
            switch_start = time.perf_counter()
            second = install(versions[1], store)
            wait_for(second.version)
            refused = install(broken_version(digits_bundle, tmp_path / "broken"), store)
            assert not refused.verified
            time.sleep(1.5)
            assert served() == second.version  # the failed verification left the version serving
            rollback(store, NAME)
            switch_end = wait_for(first.version)
            time.sleep(1.0)
            stop.set()
    finally:
        stop.set()
        server.stop()
    statuses = [code for _, code, _ in results]
    during = [t for t, _, _ in results if switch_start <= t <= switch_end]
    assert len(results) > 50 and len(during) > 10
    assert statuses.count(200) == len(statuses), f"{len(statuses) - statuses.count(200)} requests failed"
    assert {v for _, _, v in results} == {first.version, second.version}
    log = server.proc.stdout.read()
    assert f"now serving {NAME} {second.version}" in log and f"now serving {NAME} {first.version}" in log


def test_a_version_installed_without_activation_waits_for_activate(versions, tmp_path):
    store = tmp_path / "store"
    first = install(versions[0], store)
    waiting = install(versions[1], store, activate_it=False)
    assert waiting.verified and not waiting.active
    install(versions[2], store, keep=1)  # pruning keeps the one still waiting
    assert activate(store, NAME, waiting.version) == waiting.version
    assert first.version not in {p.name for p in (store / NAME / "versions").iterdir()}


def test_a_stored_version_that_arrives_signed_takes_its_signature(versions, tmp_path, monkeypatch):
    from edgepack_runtime.signature import sign_bundle

    from .test_signing import _keys

    store = tmp_path / "store"
    unsigned = install(versions[0], store)
    private, public = _keys(tmp_path, "release")
    sign_bundle(versions[0], private)
    monkeypatch.setenv("EDGEPACK_TRUSTED_KEYS", str(public))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with pytest.raises(SignatureError, match="not signed"):
        edgepack_runtime.load(store / NAME / "current")  # stored unsigned: refused once keys are trusted
    signed = install(versions[0], store, require_signature=True)
    assert signed.verified and signed.version == unsigned.version and signed.verification["signature"]["verified"]
    with edgepack_runtime.load(store / NAME / "current", artifact="onnx-fp32"):
        pass


def test_install_hashes_each_file_of_the_bundle_once(digits_bundle, tmp_path, monkeypatch):
    """The store verifies a version once: integrity, then each artifact's self-test on the
    bundle already checked, not re-hashed per artifact (the golden file, read by every
    self-test, is checked where it is read)."""
    from collections import Counter

    from edgepack_runtime import bundle as bundle_module

    hashed = Counter()
    real = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.update([Path(path).name]) or real(path))
    result = install(digits_bundle, tmp_path / "store")
    assert result.verified, result.reason
    manifest = edgepack_runtime.open_bundle(digits_bundle).manifest
    artifact_files = [f.path for a in manifest.artifacts if a.status == "ok" for f in a.all_files()]
    assert artifact_files and all(hashed[name] == 1 for name in artifact_files), hashed
