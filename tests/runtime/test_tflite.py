"""The LiteRT backend: int8 I/O, raw tensors, threads, and the tflite-runtime fallback."""

import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime import InputError

ROOT = Path(__file__).resolve().parents[2]


def test_int8_model_takes_and_returns_floats(digits_bundle):
    model = edgepack_runtime.load(digits_bundle, artifact="tflite-int8", threads=1)
    assert model.threads == 1 and model.backend.startswith("ai-edge-litert ")
    assert model.native_dtypes() == {"image": np.dtype("int8")}
    inputs, reference = edgepack_runtime.open_bundle(digits_bundle).golden()
    out = model.run({"image": inputs["image"][0]})["output"]
    assert out.dtype == np.float32
    assert np.abs(out - reference["output"][0]).max() < 0.1 * np.abs(reference["output"][0]).max()


def test_raw_passes_the_integer_tensors_through(digits_bundle):
    model = edgepack_runtime.load(digits_bundle, artifact="tflite-int8")
    x = edgepack_runtime.open_bundle(digits_bundle).golden()[0]["image"][0]
    with pytest.raises(InputError, match="expected int8; raw=True takes the artifact's own integer tensors"):
        model.run({"image": x}, raw=True)
    # Quantize by hand with the input tensor's own scale and zero point.
    params = model.quantization()
    assert set(params) == {"image", "output"}
    scale, zero_point = params["image"]
    q = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
    raw = model.run({"image": q}, raw=True)["output"]
    assert raw.dtype == np.int8
    out_scale, out_zero = params["output"]
    dequantized = (raw.astype(np.float32) - out_zero) * out_scale
    np.testing.assert_allclose(dequantized, model.run({"image": x})["output"], atol=1e-6)


def _venv_with(tmp_path: Path, *requirements: str) -> Path:
    """A fresh venv with only the runtime (no ai-edge-litert) and `requirements`."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    source = tmp_path / "runtime-src"  # build from a copy: no build/ directory in the checkout
    import shutil

    shutil.copytree(ROOT / "runtime", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([python, "-m", "pip", "install", "-q", *requirements, str(source)], check=True,
                   capture_output=True, timeout=600)
    return python


@pytest.mark.slow
def test_tflite_runtime_fallback_runs_the_bundle_and_explains_numpy2(digits_bundle, build_digits, tmp_path):
    python = _venv_with(tmp_path, "numpy<2", "tflite-runtime==2.14.0")
    cli = python.parent / "edgepack-runtime"
    for name in ("tflite-fp32", "tflite-int8"):
        ok = subprocess.run([cli, "verify", digits_bundle, "--artifact", name],
                            capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "passed" in next(line for line in ok.stdout.splitlines() if name in line)
    # Found here: ai-edge-quantizer's dynamic-range int8 models compute wrong outputs on
    # tflite-runtime 2.14 (max |diff| ~15 on digits logits; fine on ai-edge-litert).
    # This is what on-device verify is for: it must refuse the artifact, not pass it.
    dynamic_bundle = build_digits("host", name="host-dynamic", formats=["tflite"],
                                  precisions=["fp32", "dynamic-int8"]).path
    dynamic = subprocess.run([cli, "verify", dynamic_bundle, "--artifact", "tflite-dynamic-int8"],
                             capture_output=True, text=True, timeout=300)
    assert dynamic.returncode == 1 and "FAILED" in dynamic.stdout, dynamic.stdout + dynamic.stderr
    backend = subprocess.run(
        [python, "-c",
         "import edgepack_runtime as e; print(e.load(%r, artifact='tflite-int8').backend)" % str(digits_bundle)],
        capture_output=True, text=True, timeout=120)
    assert backend.stdout.strip() == "tflite-runtime 2.14.0", backend.stderr

    subprocess.run([python, "-m", "pip", "install", "-q", "numpy>=2"], check=True, capture_output=True, timeout=600)
    broken = subprocess.run([cli, "run", digits_bundle, "--artifact", "tflite-fp32", "--input", "image=x.npy"],
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    errors = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in broken.stderr, broken.stderr
    assert "tflite-runtime 2.14.0 was built for numpy 1.x" in errors[0]
    assert "pip install 'numpy<2'" in errors[0] and "edgepack-runtime[tflite]" in errors[0]
