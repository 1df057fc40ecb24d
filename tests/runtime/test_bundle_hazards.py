"""The adversarial long tail of issue 21 on the device side: path hazards, damaged golden
and drift data, signatures that no longer match, child processes that hang or fail.
Each ends in a clean result or one typed error (one line from the CLI), never a traceback."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime.bundle import sha256_file
from edgepack_runtime.errors import BenchError, BundleError, PathError, SubprocessError
from edgepack_runtime.files import NAME_MAX, checked_path
from edgepack_runtime.subprocesses import run_checked

CLI = Path(sys.executable).parent / "edgepack-runtime"
X = {"image": np.zeros((1, 1, 8, 8), np.float32)}


def _cli(*args, env=None):
    proc = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EDGEPACK_TELEMETRY": "0", **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _one_line(proc, *fragments):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _edit(bundle: Path, change) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _artifact(manifest, name="onnx-fp32"):
    return next(a for a in manifest["artifacts"] if a["name"] == name)


# --- paths -------------------------------------------------------------------------------

def test_the_path_rule_names_loops_and_lengths(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    for path, why in ((tmp_path / "a", "symbolic link loop"), (tmp_path / "a" / "x", "symbolic link loop"),
                      (tmp_path / ("x" * (NAME_MAX + 1)), "too long"), (tmp_path / ("d/" * 2100), "too long")):
        with pytest.raises(PathError, match=why) as caught:
            checked_path(path, "thing")
        assert "\n" not in str(caught.value) and len(str(caught.value)) < 300
    assert checked_path(tmp_path / "new", "thing") == (tmp_path / "new").resolve()


@pytest.mark.parametrize("hazard", ["loop", "long"])
def test_an_artifact_path_that_loops_or_is_too_long_is_one_line(bundle_copy, hazard):
    if hazard == "loop":
        os.symlink("loop", bundle_copy / "loop")
        name, why = "loop", "symbolic link loop"
    else:
        name, why = "m" * (NAME_MAX + 1) + ".onnx", "too long"
    _edit(bundle_copy, lambda m: _artifact(m).update(path=name))
    for command in (("verify",), ("run", "--artifact", "onnx-fp32", "--input", "image=unused.npy"),
                    ("info",)):
        proc = _cli(command[0], bundle_copy, *command[1:])
        if command[0] == "info":
            assert proc.returncode == 0, proc.stderr  # info reads no artifact file
        else:
            _one_line(proc, why)
    with pytest.raises(PathError, match=why):
        edgepack_runtime.load(bundle_copy, artifact="onnx-fp32")


def test_a_bundle_directory_that_loops_is_one_line(tmp_path):
    os.symlink("b", tmp_path / "b")
    _one_line(_cli("info", tmp_path / "b"), "symbolic link loop")
    _one_line(_cli("status", "--store", tmp_path / "b"), "symbolic link loop")


# --- golden and drift data ---------------------------------------------------------------

def _golden(bundle: Path, arrays: dict) -> None:
    np.savez(bundle / "golden.npz", **arrays)
    _edit(bundle, lambda m: m["golden"].update(sha256=sha256_file(bundle / "golden.npz")))


@pytest.mark.parametrize("case", ["no outputs", "no inputs", "empty samples", "uneven samples"])
def test_damaged_golden_data_is_a_typed_error_at_verify(bundle_copy, case):
    x, y = np.zeros((4, 1, 1, 8, 8), np.float32), np.zeros((4, 1, 10), np.float32)
    arrays = {"no outputs": {"inputs/image": x}, "no inputs": {"outputs/output": y},
              "empty samples": {"inputs/image": x[:0], "outputs/output": y[:0]},
              "uneven samples": {"inputs/image": x, "outputs/output": y[:3]}}[case]
    _golden(bundle_copy, arrays)
    with pytest.raises(BundleError, match="golden self-test"):
        edgepack_runtime.open_bundle(bundle_copy).golden()
    _one_line(_cli("verify", bundle_copy), "golden.npz cannot serve as the golden self-test")
    model = edgepack_runtime.load(bundle_copy, artifact="onnx-fp32")  # running does not need them
    assert model.run(X)["output"].shape == (1, 10)


DRIFT_DAMAGE = {
    "garbage": lambda ref: "garbage",
    "a number": lambda ref: 7,
    "unknown input": lambda ref: {"nope": ref["image"]},
    "no edges": lambda ref: {"image": {"fractions": ref["image"]["fractions"]}},
    "scalar edges": lambda ref: {"image": {**ref["image"], "edges": 3}},
    "decreasing edges": lambda ref: {"image": {**ref["image"], "edges": ref["image"]["edges"][::-1]}},
    "short fractions": lambda ref: {"image": {**ref["image"], "fractions": [1.0]}},
    "nan fractions": lambda ref: {"image": {**ref["image"], "fractions": [float("nan")] * 12}},
    "huge": lambda ref: {"image": {**ref["image"], "edges": [2147483648.0] * 11}},
}


@pytest.mark.parametrize("damage", sorted(DRIFT_DAMAGE))
def test_a_damaged_drift_reference_disables_drift_with_one_warning(bundle_copy, tmp_path, monkeypatch, caplog,
                                                                    damage):
    reference = json.loads((bundle_copy / "manifest.json").read_text())["drift_reference"]
    assert reference and "image" in reference
    _edit(bundle_copy, lambda m: m.update(drift_reference=DRIFT_DAMAGE[damage](reference)))
    monkeypatch.setenv("EDGEPACK_TELEMETRY_DB", str(tmp_path / "t.sqlite"))
    monkeypatch.delenv("EDGEPACK_TELEMETRY", raising=False)
    try:
        model = edgepack_runtime.load(bundle_copy, artifact="onnx-fp32", telemetry=True)
    except BundleError:  # the manifest reader may refuse some shapes outright: that is typed too
        return
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert model.run(X)["output"].shape == (1, 10)
    assert model.drift_scores() == {}
    warnings = [r for r in caplog.records if "drift" in r.getMessage()]
    assert len(warnings) <= 1


def test_drift_failing_at_run_costs_no_inference(bundle_copy, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EDGEPACK_TELEMETRY_DB", str(tmp_path / "t.sqlite"))
    monkeypatch.delenv("EDGEPACK_TELEMETRY", raising=False)
    model = edgepack_runtime.load(bundle_copy, artifact="onnx-fp32", telemetry=True)
    assert model._drift is not None

    def broken(_inputs):
        raise ValueError("a bin count went wrong")

    monkeypatch.setattr(model._drift, "observe", broken)
    with caplog.at_level(logging.WARNING):
        outputs = [model.run(X) for _ in range(3)]
    assert all(o["output"].shape == (1, 10) for o in outputs)
    assert sum("input drift is off" in r.getMessage() for r in caplog.records) == 1
    assert model.drift_scores() == {}


def test_a_drift_reference_with_a_huge_accuracy_figure_runs(bundle_copy, tmp_path, monkeypatch):
    """The one fuzzed manifest of issue 21: top1_agreement 2147483648 and a replaced reference."""
    def change(m):
        for art in m["artifacts"]:
            if art.get("accuracy"):
                art["accuracy"]["top1_agreement"] = 2147483648
        m["drift_reference"] = {"image": {"edges": [0, 1], "fractions": [0, 1, 0], "samples": "many"}}
    _edit(bundle_copy, change)
    monkeypatch.setenv("EDGEPACK_TELEMETRY_DB", str(tmp_path / "t.sqlite"))
    monkeypatch.delenv("EDGEPACK_TELEMETRY", raising=False)
    try:
        model = edgepack_runtime.load(bundle_copy, artifact="onnx-fp32", telemetry=True)
    except BundleError:
        return
    for _ in range(40):
        model.run({"image": np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)})
    assert set(model.drift_scores()) <= {"image"}


# --- child processes ---------------------------------------------------------------------

def test_the_subprocess_helper_types_timeouts_exits_aborts_and_missing_programs():
    with pytest.raises(SubprocessError, match="took longer than 0.2 s"):
        run_checked([sys.executable, "-c", "import time; time.sleep(10)"], "sleeping", "wake up", timeout=0.2)
    with pytest.raises(SubprocessError, match=r"exit code 3: boom\)"):
        run_checked([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], "x", "y")
    with pytest.raises(SubprocessError, match="killed by SIGABRT"):
        run_checked([sys.executable, "-c", "import os; os.abort()"], "a converter", "retry")
    with pytest.raises(BenchError, match="could not start"):
        run_checked(["/nonexistent/program"], "x", "y", error=BenchError)
    assert run_checked([sys.executable, "-c", "print(1)"], "x", "y").stdout == "1\n"
    assert run_checked([sys.executable, "-c", "raise SystemExit(2)"], "x", "y", check=False).returncode == 2


def test_a_bench_worker_that_hangs_is_one_line(digits_bundle, monkeypatch):
    import edgepack_runtime.bench as bench

    monkeypatch.setattr(bench, "WORKER_TIMEOUT_S", 0.01)
    with pytest.raises(BenchError, match="took longer than"):
        bench.run_bench(digits_bundle, "onnx-fp32", [1], bench.BenchSettings(runs=2, min_seconds=0, warmup=0))


def test_an_emulator_setup_step_that_hangs_is_one_line():
    from edgepack.emulate import _run
    from edgepack.errors import EmulationError

    with pytest.raises(EmulationError, match="apt-get download took longer than"):
        _run([sys.executable, "-c", "import time; time.sleep(10)"], "apt-get download", "check apt", timeout=0.2)


# --- signatures --------------------------------------------------------------------------

def test_a_signed_bundle_edited_after_signing_fails_verify_with_no_trusted_key(bundle_copy, tmp_path, monkeypatch):
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from edgepack_runtime.signature import sign_bundle

    key = tmp_path / "key.pem"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    sign_bundle(bundle_copy, key)
    env = {"EDGEPACK_TRUSTED_KEYS": "", "EDGEPACK_TRUST_FILE": str(tmp_path / "none.toml")}
    ok = _cli("verify", bundle_copy, "--artifact", "onnx-fp32", env=env)
    assert ok.returncode == 0 and "no trusted keys configured; its files match it" in ok.stdout, ok.stderr
    _edit(bundle_copy, lambda m: m.update(name="renamed-after-signing"))  # manifest edited, no hash broken
    _one_line(_cli("verify", bundle_copy, env=env), "does not match the files: modified after signing",
              "manifest.json")
    (bundle_copy / "bundle.sig").write_text("{not json")
    _one_line(_cli("verify", bundle_copy, env=env), "bundle.sig cannot be read")
