"""Integer inputs a converter changes (issue #12): litert-torch turns int64 token ids into
int32. The bundle records it, run() takes the manifest's int64 and converts when it fits."""

from __future__ import annotations

import numpy as np
import pytest

import edgepack
import edgepack_runtime
from edgepack_runtime import InputError

pytestmark = pytest.mark.slow  # TFLite conversions of every precision, int8 searches included

TEXT_MODEL = '''
import torch

class BagOfTokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(100, 8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return self.fc((self.emb(input_ids) * mask).sum(1) / mask.sum(1))

def create():
    torch.manual_seed(0)
    return BagOfTokens()

def example_inputs():
    return {"input_ids": torch.zeros(1, 8, dtype=torch.int64), "attention_mask": torch.ones(1, 8, dtype=torch.int64)}
'''


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory):
    work = tmp_path_factory.mktemp("text")
    (work / "text.py").write_text(TEXT_MODEL)
    rng = np.random.default_rng(0)
    mask = np.ones((48, 8), np.int64)
    mask[:, 5:] = rng.integers(0, 2, (48, 3))
    np.savez(work / "calib.npz", input_ids=rng.integers(1, 100, (48, 8)), attention_mask=mask)
    # On request, any precision a format can build: dynamic int8 also for ONNX (not in the profile).
    return edgepack.build(f"{work / 'text.py'}:create", work / "bundle", "host", calibration=work / "calib.npz",
                          precisions=["fp32", "int8", "dynamic-int8"], task="generic").path  # 4 random scores


def test_int64_ids_build_for_every_format_and_precision(text_bundle):
    manifest = edgepack_runtime.open_bundle(text_bundle).manifest
    assert [s.dtype for s in manifest.inputs] == ["int64", "int64"]
    assert all(a.status == "ok" and a.validation.passed for a in manifest.artifacts), manifest.artifacts
    assert {a.name for a in manifest.artifacts} == {f"{f}-{p}" for f in ("onnx", "tflite")
                                                     for p in ("fp32", "int8", "dynamic-int8")}
    assert manifest.artifact("onnx-dynamic-int8").quantization.tool == "onnxruntime.quantization.quantize_dynamic"
    for art in manifest.artifacts:
        narrowed = {"input_ids": "int32", "attention_mask": "int32"} if art.format == "tflite" else None
        assert art.input_dtypes == narrowed, art.name


def test_run_takes_the_manifests_int64_for_every_artifact(text_bundle):
    rng = np.random.default_rng(1)
    feeds = {"input_ids": rng.integers(1, 100, (1, 8)), "attention_mask": np.ones((1, 8), np.int64)}
    reference = edgepack_runtime.load(text_bundle, artifact="onnx-fp32").run(feeds)["output"]
    tflite = edgepack_runtime.load(text_bundle, artifact="tflite-fp32")
    np.testing.assert_allclose(tflite.run(feeds)["output"], reference, atol=1e-5)
    too_big = {**feeds, "input_ids": np.full((1, 8), 2**40, np.int64)}
    with pytest.raises(InputError, match=r"beyond the int32 this artifact takes") as err:
        tflite.run(too_big)
    assert "\n" not in str(err.value)
