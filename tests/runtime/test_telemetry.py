"""Telemetry: records, summaries and exports, the size cap, crash safety, drift."""

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime.drift import DRIFT_THRESHOLD, MODERATE_THRESHOLD
from edgepack_runtime.telemetry import TelemetryWriter
from edgepack_runtime.telemetry_report import export, histogram_percentile, purge, summary


@pytest.fixture
def telemetry_db(tmp_path, monkeypatch):
    path = tmp_path / "telemetry.sqlite"
    monkeypatch.setenv("EDGEPACK_TELEMETRY_DB", str(path))
    monkeypatch.delenv("EDGEPACK_TELEMETRY", raising=False)
    return path


def test_inferences_are_recorded_summarised_and_exported(digits_bundle, telemetry_db, tmp_path):
    model = edgepack_runtime.load(digits_bundle, artifact="onnx-fp32", telemetry=True)
    x = np.zeros((1, 1, 8, 8), np.float32)
    for _ in range(50):
        model.run({"image": x})
    with pytest.raises(edgepack_runtime.InputError):
        model.run({"image": x[0]})
    assert model.telemetry.flush() is not None
    data = summary(telemetry_db)
    (row,) = data["artifacts"]
    assert row["artifact"] == "onnx-fp32" and row["bundle"] == model.telemetry_label
    assert row["count"] == 51 and row["errors"] == {"InputError": 1}
    assert row["error_rate"] == pytest.approx(1 / 51)
    assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p90"] <= row["latency_ms"]["p99"]
    prom = export(telemetry_db, "prometheus")
    assert f'edgepack_inferences_total{{bundle="{model.telemetry_label}",artifact="onnx-fp32",outcome="ok"}} 50' in prom
    assert "edgepack_telemetry_dropped_total 0" in prom
    assert all(line.startswith("#") or len(line.rsplit(" ", 1)) == 2 for line in prom.splitlines())
    csv_rows = export(telemetry_db, "csv").strip().splitlines()
    assert csv_rows[0].startswith("minute_utc,bundle,artifact,outcome,count")
    assert sum(int(r.split(",")[4]) for r in csv_rows[1:]) == 51
    purge(telemetry_db)
    assert summary(telemetry_db)["artifacts"] == []


def test_off_by_default_in_python_and_off_by_env(digits_bundle, telemetry_db, monkeypatch):
    assert edgepack_runtime.load(digits_bundle).telemetry is None
    monkeypatch.setenv("EDGEPACK_TELEMETRY", "0")
    assert edgepack_runtime.load(digits_bundle, telemetry=True).telemetry is None


def test_cli_export_is_atomic_and_summary_prints(digits_bundle, telemetry_db, tmp_path):
    cli = [sys.executable, "-m", "edgepack_runtime.cli"]
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    env_run = subprocess.run([*cli, "run", digits_bundle, "--input", f"image={tmp_path / 'x.npy'}"],
                             capture_output=True, text=True, timeout=120)
    assert env_run.returncode == 0, env_run.stderr  # the CLI records by default (flushed at exit)
    out = tmp_path / "edgepack.prom"
    proc = subprocess.run([*cli, "telemetry", "export", "--format", "prometheus", "-o", out],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "edgepack_inferences_total" in out.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    shown = subprocess.run([*cli, "telemetry", "summary", "--since", "1h"], capture_output=True, text=True)
    default_format = edgepack_runtime.load(digits_bundle).artifact.format  # what `run` used
    assert shown.returncode == 0 and f"{default_format}-" in shown.stdout
    bad = subprocess.run([*cli, "telemetry", "summary", "--since", "yesterday"], capture_output=True, text=True)
    assert bad.returncode == 2 and "must look like" in bad.stderr and "Traceback" not in bad.stderr


def test_the_size_cap_prunes_old_data_and_counts_what_cannot_fit(tmp_path):
    path = tmp_path / "small.sqlite"
    cap = 256 * 1024
    writer = TelemetryWriter(path, batch_records=10**9, flush_seconds=3600, max_bytes=cap)
    for batch in range(60):  # far more than the cap holds: old data must make room
        for i in range(200):
            writer.record(f"bundle-{batch}", "a", 0.1 + i / 1000, "ok")
        writer.flush()
    conn = sqlite3.connect(path)
    pages, page_size = conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA page_size").fetchone()[0]
    assert pages * page_size <= cap  # the database proper (the WAL is checkpointed back into it)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = {b for (b,) in conn.execute("SELECT DISTINCT bundle FROM events")}
    assert "bundle-0" not in kept  # the oldest went first
    assert conn.execute("SELECT COUNT(*) FROM events WHERE bundle = 'bundle-59'").fetchone()[0] == 200
    for _ in range(20000):  # one batch larger than the whole cap: dropped and counted, never raised
        writer.record("huge", "a", 1.0, "ok")
    assert writer.flush() is None and writer.dropped_total == 20000
    writer.record("after", "a", 1.0, "ok")
    assert writer.flush() is not None
    writer.close()
    assert summary(path)["dropped"] == 20000


WRITER = textwrap.dedent("""
    import sys, random, time
    from edgepack_runtime.telemetry import TelemetryWriter
    def committed(batch, records):
        print(batch, records, flush=True)  # reported only after COMMIT returned
    writer = TelemetryWriter(sys.argv[1], batch_records=50, flush_seconds=0.01, on_commit=committed)
    while True:
        writer.record("crash-test", random.choice(["a", "b"]), random.random(), "ok")
        time.sleep(0.0002)  # an inference's worth of time: many small batches, commits at random moments
""")


@pytest.mark.slow
def test_sigkill_never_loses_a_committed_batch_or_corrupts_the_database(tmp_path):
    path = tmp_path / "crash.sqlite"
    reported: dict[int, int] = {}
    rng = random.Random(1234)
    kills = 25
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, 1.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        lines = out.splitlines()
        if out and not out.endswith("\n"):
            lines = lines[:-1]  # the kill tore the last report mid-print: that batch is simply not claimed
        for line in lines:
            batch, records = map(int, line.split())
            reported[batch] = records
    assert len(reported) >= 2 * kills  # the writer committed often between kills
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = dict(conn.execute("SELECT id, records FROM batches"))
    missing = {b: n for b, n in reported.items() if stored.get(b) != n}
    assert missing == {}, f"{len(missing)} committed batches lost"
    # events and per-minute aggregates were written in the same transactions as their batches
    total = conn.execute("SELECT SUM(records) FROM batches").fetchone()[0]
    assert conn.execute("SELECT SUM(count) FROM minutes").fetchone()[0] == total
    print(f"crash test: {kills} SIGKILLs, {len(reported)} batches reported committed, {total} records stored")


def test_drift_score_is_low_in_distribution_and_high_when_shifted(digits_bundle, digits_data, telemetry_db):
    assert edgepack_runtime.open_bundle(digits_bundle).manifest.drift_reference["image"]["samples"] == 200
    with np.load(digits_data / "eval.npz") as data:
        images = data["image"]  # held-out real digits: same distribution as calibration
    model = edgepack_runtime.load(digits_bundle, artifact="onnx-fp32", telemetry=True)
    assert model.drift_scores() == {"image": None}  # too few observations yet
    for image in images[:300]:
        model.run({"image": image[None]})
    in_distribution = model.drift_scores()["image"]
    assert in_distribution < MODERATE_THRESHOLD
    inverted = model  # same model, new window: inverted contrast (a camera with the wrong polarity)
    for image in images[:500]:
        inverted.run({"image": (1.0 - image[None]).astype(np.float32)})
    assert inverted.drift_scores()["image"] > DRIFT_THRESHOLD
    model.telemetry.flush()
    drift = summary(telemetry_db)["drift"]
    assert drift and drift[0]["input"] == "image" and drift[0]["drifted"]


def test_histogram_percentiles_interpolate_inside_buckets():
    from edgepack_runtime.telemetry import HISTOGRAM_EDGES_MS, histogram_index

    histogram = [0] * (len(HISTOGRAM_EDGES_MS) + 1)
    latencies = np.linspace(0.5, 5.0, 1000)
    for v in latencies:
        histogram[histogram_index(v)] += 1
    for q in (0.5, 0.9, 0.99):
        exact = float(np.percentile(latencies, q * 100))
        assert histogram_percentile(histogram, q) == pytest.approx(exact, rel=0.1)  # 4 buckets per octave
    assert histogram_percentile([0] * 5, 0.5) is None


def test_cli_and_server_settings_come_from_the_environment(tmp_path, monkeypatch):
    from edgepack_runtime.telemetry import shared_writer

    monkeypatch.setenv("EDGEPACK_TELEMETRY_FLUSH_SECONDS", "0.5")
    monkeypatch.setenv("EDGEPACK_TELEMETRY_BATCH_RECORDS", "16")
    writer = shared_writer(tmp_path / "env.sqlite")
    assert (writer.flush_seconds, writer.batch_records) == (0.5, 16)
    monkeypatch.setenv("EDGEPACK_TELEMETRY_MAX_BYTES", "lots")
    with pytest.raises(edgepack_runtime.EdgepackError, match="EDGEPACK_TELEMETRY_MAX_BYTES='lots' is not a valid int"):
        shared_writer(tmp_path / "other.sqlite")
