"""A broken telemetry database never costs an inference: one warning, the drop counted."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime.errors import TelemetryError
from edgepack_runtime.telemetry import TelemetryWriter
from edgepack_runtime.telemetry_report import summary

CLI = [sys.executable, "-m", "edgepack_runtime.cli"]


@contextmanager
def _tmpfs(where: Path, options: str):
    """A real filesystem with `options` (read-only, tiny), or a skip where mounting is not allowed."""
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _infer(bundle: Path, db: Path, monkeypatch):
    monkeypatch.setenv("EDGEPACK_TELEMETRY_DB", str(db))
    monkeypatch.delenv("EDGEPACK_TELEMETRY", raising=False)
    model = edgepack_runtime.load(bundle, artifact="onnx-fp32", telemetry=True)
    out = model.run({"image": np.zeros((1, 1, 8, 8), np.float32)})
    assert out["output"].shape == (1, 10)
    return model.telemetry


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_corrupt_database_is_kept_aside_and_a_new_one_started(digits_bundle, tmp_path, monkeypatch, caplog, content):
    db = tmp_path / "telemetry.sqlite"
    db.write_bytes(content)
    writer = _infer(digits_bundle, db, monkeypatch)
    assert writer.disabled is None and writer.flush() is not None
    (aside,) = tmp_path.glob("telemetry.sqlite.corrupt-*")
    assert aside.read_bytes() == content  # nothing the user had is lost
    assert summary(db)["artifacts"][0]["count"] == 1
    assert sum("kept it as" in r.getMessage() for r in caplog.records) == 1


def test_a_foreign_schema_is_kept_aside(digits_bundle, tmp_path, monkeypatch):
    db = tmp_path / "telemetry.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE events (who TEXT)")
        conn.execute("INSERT INTO events VALUES ('theirs')")
    writer = _infer(digits_bundle, db, monkeypatch)
    assert writer.flush() is not None
    (aside,) = tmp_path.glob("telemetry.sqlite.corrupt-*")
    assert sqlite3.connect(aside).execute("SELECT who FROM events").fetchall() == [("theirs",)]


def test_a_directory_in_the_way_turns_telemetry_off_with_one_warning(digits_bundle, tmp_path, monkeypatch, caplog):
    db = tmp_path / "telemetry.sqlite"
    db.mkdir()
    writer = _infer(digits_bundle, db, monkeypatch)
    assert writer.disabled and writer.dropped_total == 1
    assert sum("telemetry is off" in r.getMessage() for r in caplog.records) == 1


def test_a_read_only_filesystem_turns_telemetry_off(digits_bundle, tmp_path, monkeypatch):
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        writer = _infer(digits_bundle, ro / "telemetry.sqlite", monkeypatch)
        assert writer.disabled and writer.dropped_total == 1


def test_a_full_disk_drops_and_counts_batches_and_inference_goes_on(tmp_path):
    with _tmpfs(tmp_path / "full", "size=256k") as full:
        writer = TelemetryWriter(full / "telemetry.sqlite", batch_records=10**9, flush_seconds=3600)
        assert writer.disabled is None
        for batch in range(40):
            for i in range(500):
                writer.record(f"bundle-{batch}-{i}", "a", 0.5, "ok")
            writer.flush()
        assert writer.dropped_total > 0  # counted, never raised
        writer.close()


def test_the_cli_runs_with_a_corrupt_database_and_reports_cannot_read_it(digits_bundle, tmp_path):
    db = tmp_path / "telemetry.sqlite"
    db.write_bytes(b"garbage" * 500)
    env = {"EDGEPACK_TELEMETRY_DB": str(db), "PATH": "/usr/bin:/bin"}
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    run = subprocess.run([*CLI, "run", digits_bundle, "--input", f"image={tmp_path / 'x.npy'}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.count("kept it as") == 1
    (tmp_path / "bad.sqlite").write_bytes(b"garbage" * 500)
    with pytest.raises(TelemetryError, match="cannot read the telemetry database"):
        summary(tmp_path / "bad.sqlite")
    shown = subprocess.run([*CLI, "telemetry", "summary", "--db", tmp_path / "bad.sqlite"],
                           capture_output=True, text=True)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr and len(shown.stderr.strip().splitlines()) == 1
