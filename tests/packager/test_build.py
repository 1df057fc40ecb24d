import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import edgepack
import edgepack_runtime
from edgepack.errors import BuildError
from edgepack.model_source import load_model
from edgepack_runtime.bundle import sha256_file
from edgepack_runtime.hostinfo import host_info
from edgepack_runtime.manifest import SCHEMA_VERSION
from edgepack_runtime.parity import run_samples, top1_accuracy

from ..conftest import DIGITS_MODEL

MAX_INT8_DROP = 1.0  # top-1 points, on a host that matches the target (issue #2)


def test_bundle_is_self_contained_and_hashed(digits_bundle):
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["target"]["id"] == "host"
    assert manifest["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32", "dynamic": []}]
    assert manifest["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32", "dynamic": []}]
    assert {"torch", "onnx", "onnxruntime", "edgepack"} <= set(manifest["toolchain"])
    names = sorted(a["name"] for a in manifest["artifacts"])
    assert names == ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]  # x86: no dynamic by default
    assert all(a["status"] == "ok" for a in manifest["artifacts"])
    listed = {manifest["golden"]["path"], "manifest.json"} | {a["path"] for a in manifest["artifacts"]}
    assert {p.name for p in digits_bundle.iterdir()} == listed  # no stray .onnx.data
    for art in manifest["artifacts"]:
        file = digits_bundle / art["path"]
        assert sha256_file(file) == art["sha256"] and file.stat().st_size == art["size_bytes"]
    for int8 in (a for a in manifest["artifacts"] if a["precision"] == "int8"):
        assert int8["quantization"]["calibration"] == "data"
        assert int8["quantization"]["calibration_samples"] == 200
    assert {"litert-torch", "ai-edge-quantizer", "ai-edge-litert"} <= set(manifest["toolchain"])


def _trained_torch(digits_data):
    return load_model(DIGITS_MODEL, weights=digits_data / "weights.safetensors").module


def test_every_artifact_round_trips_against_torch(digits_bundle, digits_data):
    """build → runtime.load → run on the real eval set → compare with PyTorch."""
    with np.load(digits_data / "eval.npz") as data:
        images, labels = data["image"][:, None], data["labels"]  # [N, 1, 1, 8, 8]
    with torch.no_grad():
        reference = _trained_torch(digits_data)(torch.from_numpy(images[:, 0])).numpy()
    torch_top1 = top1_accuracy(reference, labels)
    assert torch_top1 > 95.0  # a trained model, not random weights
    names = [a.name for a in edgepack_runtime.open_bundle(digits_bundle).manifest.artifacts]
    assert {"onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"} <= set(names)
    for name in names:
        model = edgepack_runtime.load(digits_bundle, artifact=name)
        logits = run_samples(model.run, {"image": images})["output"][:, 0]
        if model.artifact.precision == "fp32":
            np.testing.assert_allclose(logits, reference, atol=1e-4)
        else:
            assert np.max(np.abs(logits - reference)) < 0.1 * np.max(np.abs(reference)), name
        assert torch_top1 - top1_accuracy(logits, labels) <= MAX_INT8_DROP, name


@pytest.mark.slow
@pytest.mark.parametrize("target", ["host", "x86-64/avx2", "x86-64/avx512-vnni"])
def test_int8_stays_within_one_point_where_the_host_matches(build_digits, target):
    result = build_digits("host") if target == "host" else build_digits(target)
    host = host_info()
    for art in result.manifest.artifacts:
        profile = edgepack.load_target(target)
        matches = profile.matches_host(host, art.format, art.precision)
        assert art.validation.host_matches_target == matches
        assert art.accuracy.indicative == (not matches)
        if matches:
            assert art.accuracy.drop <= MAX_INT8_DROP, f"{target} {art.name} lost {art.accuracy.drop} points"


@pytest.mark.slow
def test_arm_bundle_validated_on_x86_is_marked_indicative(build_digits):
    result = build_digits("raspberry-pi/5")
    assert host_info().arch == "x86_64"
    # The Pi 5 profile adds fp16 TFLite and ncnn artifacts (it has fp16 arithmetic); Pi 4 does not.
    names = {a.name for a in result.manifest.artifacts}
    assert names == {"onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8", "tflite-dynamic-int8", "tflite-fp16",
                     "ncnn-fp32", "ncnn-fp16"}
    fp16 = result.manifest.artifact("tflite-fp16")
    assert fp16.validation.passed and fp16.size_bytes < 0.6 * result.manifest.artifact("tflite-fp32").size_bytes
    for art in result.manifest.artifacts:
        assert art.validation.host_matches_target is False
        assert art.validation.host["arch"] == "x86_64"
        assert art.accuracy.indicative is True
    from rich.console import Console

    from edgepack_runtime.report import artifacts_table

    console = Console(width=200, record=True)
    console.print(artifacts_table(result.manifest))
    assert "indicative" in console.export_text()


def test_without_calibration_int8_uses_random_data_and_says_so(tiny_model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edgepack"):
        result = edgepack.build(f"{tiny_model}:create", tmp_path / "b", "x86-64/avx512-vnni", formats=["onnx"])
    assert any("RANDOM" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    int8 = result.manifest.artifact("onnx-int8")
    assert int8.quantization.calibration == "random"
    assert result.manifest.golden.real_samples == 0


def test_python_api_returns_path_and_validation(tiny_model, tmp_path):
    result = edgepack.build(f"{tiny_model}:create", tmp_path / "b", "arm64/generic", formats=["onnx"],
                            calibration=tiny_model.parent / "calib.npz", precisions=["fp32"])
    assert result.path == (tmp_path / "b").absolute()
    (art,) = result.manifest.artifacts
    assert art.validation.passed and art.validation.max_abs_diff <= art.validation.tolerance
    assert result.manifest.name == "b"


def test_failed_export_keeps_the_existing_bundle(digits_bundle, tmp_path):
    dest = tmp_path / "bundle"
    import shutil

    shutil.copytree(digits_bundle, dest)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.linalg.eig(x)[0].real\n"  # no ONNX translation for eig
        "def create():\n    return M()\n"
        "def example_inputs():\n    return {'x': torch.randn(1, 4, 4)}\n"
    )
    with pytest.raises(edgepack.BuildFailed) as info:
        edgepack.build(f"{bad}:create", dest, "host", formats=["onnx"], precisions=["fp32"])
    (art,) = info.value.result.manifest.artifacts
    assert art.status == "failed" and "linalg_eig" in art.error
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py", "bundle"]  # no staging left behind


def test_refuses_to_overwrite_something_that_is_not_a_bundle(tiny_model, tmp_path):
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(BuildError, match="not an edgepack bundle .*refusing to replace it"):
        edgepack.build(f"{tiny_model}:create", dest, "host", formats=["onnx"], precisions=["fp32"])
    assert (dest / "notes.txt").read_text() == "keep me"


def test_rebuild_replaces_an_existing_bundle_whole(tiny_model, tmp_path):
    dest = tmp_path / "b"
    first = edgepack.build(f"{tiny_model}:create", dest, "host", formats=["onnx"], precisions=["fp32"])
    second = edgepack.build(f"{tiny_model}:create", dest, "host", formats=["onnx"], precisions=["fp32", "int8"],
                            task="generic", calibration=tiny_model.parent / "calib.npz")
    assert first.path == second.path
    assert sorted(a.name for a in edgepack_runtime.open_bundle(dest).manifest.artifacts) == ["onnx-fp32", "onnx-int8"]


@pytest.mark.slow
def test_killed_build_never_leaves_a_half_bundle(digits_bundle, digits_data, tmp_path):
    """SIGKILL `edgepack build` at several moments; the old bundle must survive intact each time."""
    import shutil

    dest = tmp_path / "bundle"
    shutil.copytree(digits_bundle, dest)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    cli = Path(sys.executable).parent / "edgepack"
    command = [str(cli), "build", DIGITS_MODEL, "--target", "host", "-o", str(dest),
               "--weights", str(digits_data / "weights.safetensors"),
               "--calibration", str(digits_data / "calib.npz")]
    for delay in (1.0, 2.5, 4.0, 5.5):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = {p.name: p.read_bytes() for p in dest.iterdir()}
        manifest = json.loads(after["manifest.json"])
        # Either the old bundle, or a complete new one whose hashes all check out.
        if after != before:
            edgepack_runtime.open_bundle(dest).verify_integrity()
            assert manifest["golden"]["sha256"] == sha256_file(dest / "golden.npz")
    assert os.listdir(dest)


@pytest.mark.slow
def test_real_mobilenet_v2_builds_for_pi5_in_one_command(mobilenet_data, tmp_path):
    """The ImageNet MobileNetV2 example: ONNX and TFLite, fp32 and int8, one `edgepack build`.
    On this x86 host the ARM int8 figures are indicative: shipped only within budget, never
    the default."""
    from ..conftest import ROOT

    cli = Path(sys.executable).parent / "edgepack"
    out = tmp_path / "mnv2"
    proc = subprocess.run(
        [cli, "build", f"{ROOT / 'examples' / 'mobilenet_v2' / 'model.py'}:create", "--target", "raspberry-pi/5",
         "--weights", mobilenet_data["weights"], "--calibration", mobilenet_data["calibration"],
         "--eval", mobilenet_data["eval"], "--formats", "onnx,tflite", "--precisions", "fp32,int8",
         "--allow-partial", "-o", out],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = edgepack_runtime.open_bundle(out).manifest
    assert sorted(a.name for a in manifest.artifacts) == ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]
    for art in manifest.artifacts:
        if art.precision == "fp32":
            assert art.status == "ok" and art.accuracy.cosine > 0.9999
        elif art.status == "ok":
            assert art.accuracy.within_budget and art.accuracy.indicative  # x86 host, ARM kernels
        else:
            assert art.status == "rejected" and "misses the accuracy budget" in art.error
            assert not (out / f"model.int8.{art.format}").exists()
    assert edgepack_runtime.load(out).artifact.precision == "fp32"  # indicative int8 is never the default
    assert [s.describe() for s in manifest.inputs] == ["image:1x3x224x224:float32"]
    seconds = manifest.build["seconds"]
    for stage in ("onnx.export", "onnx.quantize+search", "onnx.validate", "tflite.export", "tflite.quantize+search",
                  "tflite.validate", "total"):
        assert seconds[stage] > 0
