"""`edgepack compare`: table, files, the regression gate, and refusing mixed results."""

import copy
import json

import pytest

from edgepack_runtime.bench import BENCH_SCHEMA_VERSION, BenchSettings, run_bench

from .test_cli import one_line_error, run_cli

QUICK = BenchSettings(warmup=2, warmup_seconds=0.0, runs=20, min_seconds=0.0)


@pytest.fixture(scope="module")
def pi_and_box(digits_bundle, tmp_path_factory):
    """A real bench result, and the same one as a second device 1.5x slower (a Pi stand-in)."""
    out = tmp_path_factory.mktemp("results")
    box = run_bench(digits_bundle, "all", [1], QUICK)
    pi = copy.deepcopy(box)
    pi["device"]["name"] = "Raspberry Pi 5 Model B Rev 1.0"
    for r in pi["results"]:
        r["latency_ms"] = {k: v * 1.5 for k, v in r["latency_ms"].items()}
        r["throughput_per_s"] /= 1.5
    (out / "box.json").write_text(json.dumps(box))
    (out / "pi.json").write_text(json.dumps(pi))
    return out / "box.json", out / "pi.json"


def slowed(path, factor, tmp_path, name="new.json"):
    doc = json.loads(path.read_text())
    for r in doc["results"]:
        r["latency_ms"] = {k: v * factor for k, v in r["latency_ms"].items()}
    out = tmp_path / name
    out.write_text(json.dumps(doc))
    return out


def test_table_and_files(pi_and_box, tmp_path):
    box, pi = pi_and_box
    result = run_cli("compare", box, pi, "--baseline", pi, "--plot", tmp_path / "p.png", "--html", tmp_path / "r.html",
                     "--csv", tmp_path / "r.csv", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "Raspberry Pi 5" in result.output and "onnx-int8" in result.output
    assert "1.50x" in result.output and "1.00x" in result.output  # box vs the Pi baseline, and the Pi itself
    assert "99." in result.output  # accuracy from the manifest beside the speed

    import matplotlib.image

    png = (tmp_path / "p.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    height, width, _ = matplotlib.image.imread(tmp_path / "p.png").shape
    assert width > 300 and height > 200
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page and "data:image/png;base64," in page
    assert "src=\"http" not in page  # self-contained
    rows = (tmp_path / "r.csv").read_text().strip().splitlines()
    doc = json.loads(box.read_text())
    assert len(rows) == 1 + 2 * len(doc["results"]) and rows[0].startswith("device,artifact,threads,p50_ms")
    records = json.loads((tmp_path / "r.json").read_text())
    assert {r["device"] for r in records} == {doc["device"]["name"], "Raspberry Pi 5 Model B Rev 1.0"}


def test_regression_gate(pi_and_box, tmp_path):
    box, _ = pi_and_box
    slower = slowed(box, 1.2, tmp_path)
    failed = run_cli("compare", slower, "--baseline", box, "--fail-if-slower", "10")
    line = one_line_error(failed, "more than 10% slower than the baseline")
    for r in json.loads(box.read_text())["results"]:
        assert f"{r['artifact']}×{r['threads']}" in line
    assert run_cli("compare", slower, "--baseline", box, "--fail-if-slower", "30").exit_code == 0
    faster = slowed(box, 0.8, tmp_path, "faster.json")
    assert run_cli("compare", faster, "--baseline", box, "--fail-if-slower", "10").exit_code == 0
    usage = run_cli("compare", box, "--fail-if-slower", "10")
    one_line_error(usage, "--fail-if-slower needs --baseline")
    assert usage.exit_code == 2  # a usage error, as click's own


def test_different_bundles_and_schema_versions_are_refused(pi_and_box, tmp_path):
    box, pi = pi_and_box
    other = json.loads(pi.read_text())
    other["bundle"]["sha256"] = "f" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    one_line_error(run_cli("compare", box, tmp_path / "other.json"), "results are for different bundles")
    future = json.loads(box.read_text())
    future["schema_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(future))
    one_line_error(run_cli("compare", tmp_path / "future.json"), "schema_version 99")
    newer_minor = json.loads(box.read_text())  # a newer minor only adds keys: still compared
    newer_minor.update(schema_version=f"{BENCH_SCHEMA_VERSION.split('.')[0]}.99", a_future_key=[1])
    (tmp_path / "newer.json").write_text(json.dumps(newer_minor))
    assert run_cli("compare", tmp_path / "newer.json").exit_code == 0
    first_release = json.loads(box.read_text())  # bench results before MAJOR.MINOR wrote 1
    first_release["schema_version"] = 1
    (tmp_path / "first.json").write_text(json.dumps(first_release))
    assert run_cli("compare", tmp_path / "first.json").exit_code == 0
    (tmp_path / "junk.json").write_text("[]")
    one_line_error(run_cli("compare", tmp_path / "junk.json"), "is not a benchmark result")


def test_macs_are_counted_layer_by_layer(digits_bundle):
    from edgepack_runtime import open_bundle

    conv1 = (16 * 8 * 8) * (1 * 3 * 3)
    conv2 = (32 * 8 * 8) * (16 * 3 * 3)
    fc1, fc2 = 64 * (32 * 4 * 4), 10 * 64
    assert open_bundle(digits_bundle).manifest.macs == conv1 + conv2 + fc1 + fc2
