"""Emulated aarch64 verification (qemu-user): runs in CI, slow on first use (cached after)."""

import json
from pathlib import Path

import pytest

import edgepack
from edgepack_runtime import open_bundle
from edgepack_runtime.verdict import Verdict

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
        # The guest's whole verdict, read back: held to the artifact's own outputs with other kernels' limits.
        verdict = Verdict.from_dict(r)
        assert verdict.result == "passed" and verdict.same_kernels is False and verdict.own_tolerance is not None
    assert by_name["onnx-fp32"]["diff_vs_host"] < 1e-4
    assert json.loads((result.path / "manifest.json").read_text())["emulated"] == report
    assert open_bundle(result.path).manifest.emulated == report

    cli = run_cli("verify", result.path, "--emulate", "aarch64")
    assert cli.exit_code == 0, cli.output
    assert "cortex-a76" in cli.output and cli.output.count("passed") == 4


GUEST_PREPROCESS = """
import sys
import numpy as np
from edgepack_runtime.manifest import ImageSteps, TensorSpec
from edgepack_runtime.preprocess import ImagePipeline
steps = ImageSteps(input="image", resize=(256,), crop=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
pipeline = ImagePipeline(steps, TensorSpec("image", (1, 3, 224, 224), "float32"))
np.save(sys.argv[1], np.concatenate([pipeline(path) for path in sys.argv[2:]]))
"""


@pytest.mark.slow
def test_image_preprocessing_on_emulated_aarch64_equals_the_hosts(tmp_path):
    """Pillow's aarch64 build decodes and resizes real photos to the very same tensors."""
    import subprocess
    import sys

    import numpy as np

    from edgepack.emulate import _guest_command, _guest_runtime

    photos = [str(p) for p in sorted(Path(__import__("skimage").__file__).parent.joinpath("data").glob("*.jpg"))]
    photos += [str(Path(__import__("sklearn").__file__).parent / "datasets" / "images" / "china.jpg")]
    (tmp_path / "pre.py").write_text(GUEST_PREPROCESS)
    argv, paths = _guest_command("aarch64", "cortex-a76", lambda _: None)
    guest = {"PYTHONPATH": ":".join([str(_guest_runtime(tmp_path)), *paths])}
    subprocess.run([*argv, str(tmp_path / "pre.py"), str(tmp_path / "arm.npy"), *photos], env=guest, check=True)
    subprocess.run([sys.executable, str(tmp_path / "pre.py"), str(tmp_path / "host.npy"), *photos], check=True)
    arm, host = np.load(tmp_path / "arm.npy"), np.load(tmp_path / "host.npy")
    assert arm.shape == (len(photos), 3, 224, 224) and len(photos) >= 4
    assert np.array_equal(arm, host)
