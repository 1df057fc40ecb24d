"""ncnn as a third format (issue #23): pnnx export through the format registry, fp32 and
fp16, three files per artifact hashed and checked at load, the runtime backend's options
(threads, fp16, light mode), dynamic input sizes, and the profiles that list it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgepack
import edgepack_runtime
from edgepack.errors import BuildError
from edgepack.formats import Exported, QuantPlan, get_format
from edgepack.model_source import parse_input_specs
from edgepack.targets import load_target
from edgepack_runtime.backends import ncnn as ncnn_backend
from edgepack_runtime.errors import InputError, IntegrityError
from edgepack_runtime.parity import self_test
from edgepack_runtime.precision import precision as precision_named

# find_spec, not importorskip: importing ncnn here would load its OpenMP runtime before the
# backend chooses how its threads wait.
if importlib.util.find_spec("ncnn") is None or importlib.util.find_spec("pnnx") is None:
    pytest.skip("the ncnn extra is not installed: pip install 'edgepack[ncnn]'", allow_module_level=True)

SIZE = 16
# Eval samples: enough that a perfect top-1 agreement's 95 % interval clears the 90 % floor.
EVAL_SAMPLES = 64


def _module() -> torch.nn.Module:
    """A conv net in miniature: conv + BN, depthwise conv, pooling, a linear head."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()


def _images(count: int, seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, size, size)).astype(np.float32)


def _torch(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def ncnn_bundle(tmp_path_factory):
    """The tiny conv net built for the Pi 5 with ncnn only: fp32 and fp16."""
    out = tmp_path_factory.mktemp("ncnn") / "pi5"
    result = edgepack.build(_module(), out, "raspberry-pi/5", inputs={"x": torch.zeros(1, 3, SIZE, SIZE)},
                            calibration={"x": _images(16, 0)}, eval_data={"x": _images(EVAL_SAMPLES, 2)},
                            formats=["ncnn"])
    return result


def test_a_tiny_model_builds_for_ncnn_and_runs_like_torch(ncnn_bundle):
    arts = {a.name: a for a in ncnn_bundle.manifest.artifacts}
    assert set(arts) == {"ncnn-fp32", "ncnn-fp16"}
    for precision, art in (("fp32", arts["ncnn-fp32"]), ("fp16", arts["ncnn-fp16"])):
        assert art.status == "ok" and art.validation.passed
        assert art.validation.backend.startswith("ncnn ")
        assert [f.path for f in art.files] == [f"model.{precision}.param", f"model.{precision}.bin",
                                               f"model.{precision}.ncnn.json"]
        assert art.size_bytes == sum((ncnn_bundle.path / f.path).stat().st_size for f in art.files)
    assert {"pnnx", "ncnn"} <= set(ncnn_bundle.manifest.toolchain)
    # fp16 weights: about half the .bin
    fp32_bin, fp16_bin = (ncnn_bundle.path / f"model.{p}.bin" for p in ("fp32", "fp16"))
    assert fp16_bin.stat().st_size < 0.6 * fp32_bin.stat().st_size

    x = _images(1, 1)
    expected = _torch(_module(), x)
    fp32 = edgepack_runtime.load(ncnn_bundle.path, artifact="ncnn-fp32", threads=1)
    np.testing.assert_allclose(fp32.run({"x": x})["output"], expected, atol=1e-5)
    fp16 = edgepack_runtime.load(ncnn_bundle.path, artifact="ncnn-fp16", threads=2)
    np.testing.assert_allclose(fp16.run({"x": x})["output"], expected, atol=2e-2, rtol=2e-2)
    assert (fp32.threads, fp16.threads) == (1, 2)
    assert self_test(fp32).passed and self_test(fp16).passed


def test_the_fp16_choice_is_in_the_artifact_and_the_environment_can_override_it(ncnn_bundle, monkeypatch):
    root = ncnn_bundle.path
    options = {p: json.loads((root / f"model.{p}.ncnn.json").read_text()) for p in ("fp32", "fp16")}
    assert options["fp32"] == {"fp16": False, "fp16_arithmetic": False, "lightmode": True}
    # The Pi 5 stores in fp16 but computes in fp32: fp16 arithmetic missed the budget there.
    assert options["fp16"] == {"fp16": True, "fp16_arithmetic": False, "lightmode": True}
    delegate = lambda name: edgepack_runtime.load(root, artifact=name).provenance()["delegate"]  # noqa: E731
    assert (delegate("ncnn-fp32"), delegate("ncnn-fp16")) == ("cpu-fp32", "cpu-fp16-storage")
    monkeypatch.setenv(ncnn_backend.FP16_ARITHMETIC_ENV, "1")
    assert (delegate("ncnn-fp32"), delegate("ncnn-fp16")) == ("cpu-fp32", "cpu-fp16")
    monkeypatch.setenv(ncnn_backend.FP16_ENV, "0")
    assert delegate("ncnn-fp16") == "cpu-fp32"
    monkeypatch.setenv(ncnn_backend.FP16_ENV, "maybe")
    with pytest.raises(InputError, match="EDGEPACK_NCNN_FP16='maybe' is neither on nor off"):
        edgepack_runtime.load(root, artifact="ncnn-fp32")


@pytest.mark.parametrize("companion", ["model.fp32.bin", "model.fp32.ncnn.json"])
def test_a_tampered_companion_is_refused_at_load(ncnn_bundle, tmp_path, companion):
    root = shutil.copytree(ncnn_bundle.path, tmp_path / "bundle")
    data = bytearray((root / companion).read_bytes())
    data[-1] ^= 0xFF
    (root / companion).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{companion.replace('.', '[.]')} does not match its sha256"):
        edgepack_runtime.load(root, artifact="ncnn-fp32")


def test_a_batch_runs_one_sample_at_a_time_and_any_size_the_graph_takes(ncnn_bundle):
    """ncnn has no batch axis: the backend stacks per-sample results. Convolutions and global
    pooling take any spatial size; pnnx's graph is not tied to the traced one."""
    session = ncnn_backend.open_session(ncnn_bundle.path / "model.fp32.param", 1, ["x"], ["output"])
    module = _module()
    for count, size in ((3, SIZE), (2, 24)):
        x = _images(count, size, size)
        np.testing.assert_allclose(session.run({"x": x})["output"], _torch(module, x), atol=1e-5)
    assert session.fixed_shapes() is None and session.quantization() == {} and session.native_dtypes() == {}


def test_dynamic_dims_build_and_run_through_load(tmp_path):
    result = edgepack.build(_module(), tmp_path / "dyn", "raspberry-pi/5", formats=["ncnn"], precisions=["fp32"],
                            inputs=["x:batch=1..4x3xh=12..32xw=12..32:float32"],
                            calibration={"x": _images(8, 0, 20)}, eval_data={"x": _images(EVAL_SAMPLES, 2, 20)})
    model = edgepack_runtime.load(result.path, artifact="ncnn-fp32")
    for batch, h, w in ((1, 12, 32), (4, 32, 20)):
        x = np.random.default_rng(batch).standard_normal((batch, 3, h, w)).astype(np.float32)
        np.testing.assert_allclose(model.run({"x": x})["output"], _torch(_module(), x), atol=1e-5)


def test_profiles_list_ncnn_with_their_fp16_choice_and_no_int8():
    pi4, pi5, generic = (load_target(t) for t in ("raspberry-pi/4b", "raspberry-pi/5", "arm64/generic"))
    for profile in (pi4, pi5, generic):
        assert "ncnn" in profile.formats and profile.threads == 4 and profile.settings("ncnn").lightmode
    # fp16 arithmetic (asimdhp) on the Pi 5 only: an fp16 artifact elsewhere only halves the download.
    assert pi5.settings("ncnn").precisions == ("fp32", "fp16") and "asimdhp" in pi5.isa
    assert not pi5.settings("ncnn").fp16_arithmetic  # measured: 93.75 % top-1 agreement on an A76
    assert pi4.settings("ncnn").precisions == generic.settings("ncnn").precisions == ("fp32",)
    fmt = get_format("ncnn")
    assert "int8" not in fmt.precisions and fmt.runtime_extra == "ncnn"
    with pytest.raises(BuildError, match="ncnn2table and ncnn2int8, which no PyPI wheel ships"):
        fmt.quantize(Exported(Path("m.fp32.param")), Path("m.int8.param"), pi5, QuantPlan(precision_named("int8")), {})


def test_integer_inputs_are_refused_with_the_fix(tmp_path):
    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, ids):
            return self.emb(ids).sum(1)

    with pytest.raises(BuildError, match="ncnn takes float32 inputs only, not ids .int64.; leave ncnn out"):
        get_format("ncnn").export(Embed(), parse_input_specs(["ids:1x5:int64"]),
                                  ["output"], load_target("raspberry-pi/5"), tmp_path / "m.param")


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_ncnn_threads_wait_passively_unless_the_user_chose(preset, expected):
    """libgomp's default spinning made a 2-thread MobileNetV2 100x slower on a busy host."""
    env = {k: v for k, v in os.environ.items() if k not in ncnn_backend.OMP_USER_KNOBS}
    env.update({"OMP_WAIT_POLICY": preset} if preset else {})
    code = ("import os; from edgepack_runtime.backends.ncnn import import_ncnn; import_ncnn(); "
            "print(os.environ['OMP_WAIT_POLICY'])")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == expected, proc.stderr
