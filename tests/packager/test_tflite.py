"""TFLite through the packager: conversion failures, NHWC layout, the optional extra."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgepack
import edgepack_runtime
from edgepack import targets
from edgepack_runtime.parity import run_samples

from ..conftest import DIGITS_MODEL
from .test_cli import one_line_error, run_cli

# litert-torch has no lowering for linalg.det; torch.onnx has one. A model that
# really fails to convert to one format only.
DET_MODEL = """
import torch

class WithDet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1)) * torch.linalg.det(x).unsqueeze(-1)

def create():
    return WithDet()

def example_inputs():
    return {"x": torch.eye(2).unsqueeze(0) * 2}
"""


@pytest.fixture(scope="module")
def det_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("det") / "det.py"
    path.write_text(DET_MODEL)
    return path


def test_failed_conversion_names_the_op_and_keeps_the_other_format(det_model, tmp_path):
    args = ("build", f"{det_model}:create", "--target", "host", "--formats", "onnx,tflite", "--precisions", "fp32")
    refused = run_cli(*args, "-o", tmp_path / "strict")
    one_line_error(refused, "tflite-fp32 failed to build", "--allow-partial")
    assert "aten._linalg_det" in refused.output  # the reason, in the table
    assert not (tmp_path / "strict").exists()

    partial = run_cli(*args, "--allow-partial", "-o", tmp_path / "partial")
    assert partial.exit_code == 0, partial.output
    manifest = edgepack_runtime.open_bundle(tmp_path / "partial").manifest
    onnx, tflite = manifest.artifact("onnx-fp32"), manifest.artifact("tflite-fp32")
    assert onnx.status == "ok" and onnx.validation.passed
    assert tflite.status == "failed" and "litert-torch could not convert" in tflite.error
    assert "aten._linalg_det" in tflite.error and tflite.path is None
    # the runtime skips the failed artifact and runs the other one
    model = edgepack_runtime.load(tmp_path / "partial")
    assert model.artifact.name == "onnx-fp32"


def test_missing_extra_is_named(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if the extra were not installed
    with pytest.raises(edgepack.BuildFailed) as info:
        edgepack.build(f"{tiny_model}:create", tmp_path / "b", "host", formats=["tflite"], precisions=["fp32"])
    (art,) = info.value.result.manifest.artifacts
    assert "pip install 'edgepack[tflite]'" in art.error


@pytest.fixture
def nhwc_target(tmp_path, monkeypatch) -> str:
    """The shipped profiles plus one that asks for channels-last TFLite inputs."""
    root = tmp_path / "profiles"
    shutil.copytree(Path(str(targets._profiles_root())), root)
    (root / "raspberry-pi" / "5-camera.toml").write_text(
        'extends = "raspberry-pi/5"\ndescription = "Pi 5 fed HWC camera frames"\n[tflite]\nlayout = "nhwc"\n'
    )
    monkeypatch.setattr(targets, "_profiles_root", lambda: root)
    return "raspberry-pi/5-camera"


@pytest.mark.slow
def test_nhwc_layout_is_recorded_and_fed_correctly(nhwc_target, digits_data, tmp_path):
    result = edgepack.build(DIGITS_MODEL, tmp_path / "b", nhwc_target, formats=["tflite"],
                            precisions=["fp32", "int8"], weights=digits_data / "weights.safetensors",
                            calibration=digits_data / "calib.npz")
    from ai_edge_litert.interpreter import Interpreter

    for art in result.manifest.artifacts:
        assert art.layout == "nhwc" and art.validation.passed, art
        detail = Interpreter(model_path=str(result.path / art.path)).get_input_details()[0]
        assert list(detail["shape"]) == [1, 8, 8, 1]  # the file itself takes HWC frames
    # The manifest (and Model.run) keep PyTorch's NCHW; the runtime transposes.
    assert [s.describe() for s in result.manifest.inputs] == ["image:1x1x8x8:float32"]
    with np.load(digits_data / "eval.npz") as data:
        images = data["image"][:20, None]
    from edgepack.model_source import load_model

    module = load_model(DIGITS_MODEL, weights=digits_data / "weights.safetensors").module
    with torch.no_grad():
        reference = module(torch.from_numpy(images[:, 0])).numpy()
    out = run_samples(edgepack_runtime.load(result.path, artifact="tflite-fp32").run, {"image": images})["output"]
    np.testing.assert_allclose(out[:, 0], reference, atol=1e-4)
