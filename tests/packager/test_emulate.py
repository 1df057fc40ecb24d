"""Emulated aarch64 verification (qemu-user): runs in CI, slow on first use (cached after)."""

import json

import pytest

import edgepack
from edgepack_runtime import open_bundle

from ..conftest import DIGITS_MODEL
from .test_cli import run_cli


@pytest.mark.slow
def test_build_verify_emulated_records_results_and_the_cli_agrees(digits_data, tmp_path):
    result = edgepack.build(DIGITS_MODEL, tmp_path / "pi5", "raspberry-pi/5", formats=["onnx", "tflite"],
                            precisions=["fp32", "int8"], weights=digits_data / "weights.safetensors",
                            calibration=digits_data / "calib.npz", verify_emulated=True)
    report = result.manifest.emulated
    assert report["arch"] == "aarch64" and report["cpu"] == "cortex-a76" and "qemu" in report["qemu"]
    by_name = {r["artifact"]: r for r in report["results"]}
    assert set(by_name) == {"onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"}
    for r in by_name.values():
        assert r["passed"] and r["error"] is None, r
        assert r["max_abs_diff"] <= r["tolerance"] and r["diff_vs_host"] is not None
    assert by_name["onnx-fp32"]["diff_vs_host"] < 1e-4
    assert json.loads((result.path / "manifest.json").read_text())["emulated"] == report
    assert open_bundle(result.path).manifest.emulated == report

    cli = run_cli("verify", result.path, "--emulate", "aarch64")
    assert cli.exit_code == 0, cli.output
    assert "cortex-a76" in cli.output and cli.output.count("passed") == 4
