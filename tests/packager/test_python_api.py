"""The Python API takes what an ML user has in hand (issue #11): a module, example
tensors, calibration and eval data as arrays or tensors; no files, no FILE.py:FACTORY."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgepack
import edgepack_runtime
from edgepack.errors import ModelSourceError


class TwoLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))

    def forward(self, features):
        return self.net(features)


@pytest.fixture(scope="module")
def module_and_data():
    torch.manual_seed(0)
    module = TwoLayer().eval()
    rng = np.random.default_rng(0)
    calibration = {"features": torch.from_numpy(rng.standard_normal((40, 1, 12)).astype(np.float32))}
    evaluation = {"features": rng.standard_normal((20, 12)).astype(np.float32),
                  "labels": rng.integers(0, 5, 20)}
    return module, calibration, evaluation


def test_a_module_with_tensors_and_arrays_builds_and_runs(module_and_data, tmp_path):
    module, calibration, evaluation = module_and_data
    result = edgepack.build(module, tmp_path / "bundle", "host", inputs={"features": torch.zeros(1, 12)},
                            calibration=calibration, eval_data=evaluation, formats=["onnx"])
    manifest = result.manifest
    assert manifest.build["model"].endswith("TwoLayer")
    assert [s.describe() for s in manifest.inputs] == ["features:1x12:float32"]
    assert {a.name: a.status for a in manifest.artifacts} == {"onnx-fp32": "ok", "onnx-int8": "ok"}
    assert manifest.artifact("onnx-int8").accuracy.data == "eval"  # the eval arrays were used, labels too
    assert manifest.artifact("onnx-int8").accuracy.reference_top1 is not None
    x = evaluation["features"][:1]
    out = edgepack_runtime.load(result.path, artifact="onnx-fp32").run({"features": x})["output"]
    with torch.no_grad():
        np.testing.assert_allclose(out, module(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_inputs_are_required_for_a_module_and_checked(module_and_data, tmp_path):
    module, calibration, _ = module_and_data
    with pytest.raises(ModelSourceError, match="input shapes are unknown"):
        edgepack.build(module, tmp_path / "a", "host", calibration=calibration)
    with pytest.raises(ModelSourceError, match="must be a dict of"):
        edgepack.build(module, tmp_path / "b", "host", inputs={"features": [1, 2, 3]})
    with pytest.raises(ModelSourceError, match="has no array for input"):
        edgepack.build(module, tmp_path / "c", "host", inputs={"features": torch.zeros(1, 12)},
                       calibration={"other": np.zeros((4, 12), np.float32)})
    with pytest.raises(ModelSourceError, match="model must be FILE.py:FACTORY or a torch.nn.Module"):
        edgepack.build(42, tmp_path / "d", "host")
    assert not any((tmp_path / n).exists() for n in "abcd")
