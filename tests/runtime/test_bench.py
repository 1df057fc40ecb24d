"""Benchmarks: statistics, the result document, the CLI and the auto-selection cache."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime.autoselect import auto_choice, cache_path, thread_options
from edgepack_runtime.bench import BENCH_SCHEMA_VERSION, BenchSettings, run_bench
from edgepack_runtime.stats import latency_summary

QUICK = BenchSettings(warmup=2, warmup_seconds=0.0, runs=20, min_seconds=0.0)
LATENCY_KEYS = {"min", "p50", "p90", "p99", "mean", "std", "max"}
RESULT_KEYS = {"artifact", "format", "precision", "threads", "backend", "backend_version", "delegate",
               "latency_ms", "throughput_per_s", "peak_rss_mb", "cold_start_ms", "first_inference_ms",
               "cpu_ms_per_inference", "runs", "gmacs_per_s", "accuracy"}


def test_percentiles_on_a_known_series():
    seconds = np.arange(1, 101) / 1e3  # 1 .. 100 ms, shuffled order must not matter
    summary = latency_summary(np.random.default_rng(0).permutation(seconds))
    # linear interpolation between closest ranks: rank = p * (n - 1)
    assert summary["min"] == pytest.approx(1.0) and summary["max"] == pytest.approx(100.0)
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p90"] == pytest.approx(90.1)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    with pytest.raises(ValueError):
        latency_summary([])


def test_a_single_outlier_moves_p99_and_max_not_p50():
    seconds = [0.001] * 99 + [0.5]
    summary = latency_summary(seconds)
    assert summary["p50"] == pytest.approx(1.0) and summary["p90"] == pytest.approx(1.0)
    assert summary["max"] == pytest.approx(500.0) and summary["mean"] > 5.0


@pytest.fixture(scope="session")
def bench_result(digits_bundle):
    return run_bench(digits_bundle, "all", [1], QUICK)


def test_result_document_schema(bench_result, digits_bundle):
    doc = bench_result
    assert doc["schema_version"] == BENCH_SCHEMA_VERSION
    assert {"name", "cpu", "arch", "cores", "isa", "governor", "freq_mhz", "temperature_c", "throttled", "os",
            "python"} <= set(doc["device"])
    assert set(doc["device"]["temperature_c"]) == {"before", "after"}
    bundle = edgepack_runtime.open_bundle(digits_bundle)
    assert doc["bundle"] == {"name": bundle.manifest.name, "target": "host", "sha256": bundle.sha256,
                             "macs": bundle.manifest.macs}
    names = {r["artifact"] for r in doc["results"]}
    assert names == {a.name for a in bundle.manifest.artifacts}
    for r in doc["results"]:
        assert RESULT_KEYS <= set(r), RESULT_KEYS - set(r)
        lat = r["latency_ms"]
        assert set(lat) == LATENCY_KEYS
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["threads"] == 1 and r["runs"] >= QUICK.runs
        assert r["cold_start_ms"] > 0 and r["peak_rss_mb"] > 0 and r["cpu_ms_per_inference"] > 0
        assert r["gmacs_per_s"] == pytest.approx(bundle.manifest.macs / (lat["p50"] / 1e3) / 1e9)
        assert r["backend"] in ("onnxruntime", "ai-edge-litert")
        assert r["delegate"] in ("CPUExecutionProvider", "xnnpack")
        assert r["accuracy"]["top1"] > 95


def test_bench_cli_writes_json_and_stays_quiet_without_a_terminal(digits_bundle, tmp_path):
    out = tmp_path / "r.json"
    cli = Path(sys.executable).parent / "edgepack-runtime"
    proc = subprocess.run([cli, "bench", digits_bundle, "--artifact", "onnx-fp32", "--threads", "1,2",
                           "--runs", "5", "--min-seconds", "0", "--warmup", "1", "--warmup-seconds", "0",
                           "-o", out], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout  # no progress bar redraws in a pipe
    doc = json.loads(out.read_text())
    assert [(r["artifact"], r["threads"]) for r in doc["results"]] == [("onnx-fp32", 1), ("onnx-fp32", 2)]
    bad = subprocess.run([cli, "bench", digits_bundle, "--threads", "0"], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


@pytest.mark.slow  # times every artifact at every thread count
def test_auto_selection_measures_once_and_reuses_the_cache(bundle_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "cache"))
    bundle = edgepack_runtime.open_bundle(bundle_copy)
    first = auto_choice(bundle)
    assert cache_path(bundle).is_file()
    tried = {(e.artifact, e.threads) for e in first.evidence}
    assert tried == {(a.name, t) for a in bundle.manifest.artifacts for t in thread_options(bundle)}
    fastest = min(first.evidence, key=lambda e: e.p50_ms)
    assert (first.artifact, first.threads) == (fastest.artifact, fastest.threads)

    # Reuse: a later load reads the cache, it does not measure again.
    cached = json.loads(cache_path(bundle).read_text())
    other = next(e for e in first.evidence if e.artifact != first.artifact)
    cached.update(artifact=other.artifact, threads=other.threads)
    cache_path(bundle).write_text(json.dumps(cached))
    model = edgepack_runtime.load(bundle_copy, artifact="auto")
    assert (model.artifact.name, model.threads) == (other.artifact, other.threads)

    # `info` shows the cached choice and its evidence.
    cli = Path(sys.executable).parent / "edgepack-runtime"
    info = subprocess.run([cli, "info", bundle_copy], capture_output=True, text=True, timeout=120)
    assert f"auto choice on this device: {other.artifact}" in info.stdout

    # A cache it cannot trust is measured again, never a traceback: damaged, or a newer major.
    for damaged in ("{", json.dumps({**cached, "threads": "two"}), json.dumps({**cached, "schema_version": "9.0"})):
        cache_path(bundle).write_text(damaged)
        assert auto_choice(bundle).artifact in {a.name for a in bundle.manifest.artifacts}
        assert json.loads(cache_path(bundle).read_text())["schema_version"] == "1.0"  # rewritten

    # A rebuilt bundle (new manifest hash) gets its own measurement.
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["name"] = "renamed"
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    assert cache_path(edgepack_runtime.open_bundle(bundle_copy)) != cache_path(bundle)
