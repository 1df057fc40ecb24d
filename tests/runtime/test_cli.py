"""`edgepack-runtime` through its real console script: info, run, verify and their errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np

import edgepack_runtime

CLI = Path(sys.executable).parent / "edgepack-runtime"


def cli(*args):
    proc = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    text = proc.stderr.replace("\n", " ")
    for fragment in fragments:
        assert fragment in text, proc.stderr


def test_info_shows_artifacts_and_default(digits_bundle):
    proc = cli("info", digits_bundle)
    assert proc.returncode == 0, proc.stderr
    default = edgepack_runtime.load(digits_bundle).artifact.name
    for fragment in ("image:1x1x8x8:float32", "onnx-fp32", "onnx-int8", f"default artifact here: {default}",
                     "fastest accurate artifact, measured when the bundle was built", "onnxruntime"):
        assert fragment in proc.stdout


def test_run_writes_the_same_outputs_as_the_api(digits_bundle, tmp_path):
    x = edgepack_runtime.open_bundle(digits_bundle).golden()[0]["image"][0]
    np.save(tmp_path / "x.npy", x)
    proc = cli("run", digits_bundle, "--input", f"image={tmp_path / 'x.npy'}", "--artifact", "onnx-fp32",
               "-o", tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    expected = edgepack_runtime.load(digits_bundle, artifact="onnx-fp32").run({"image": x})["output"]
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["output"], expected)


def test_run_with_wrong_dtype_and_shape(digits_bundle, tmp_path):
    np.save(tmp_path / "x64.npy", np.zeros((1, 1, 8, 8)))
    assert_one_line_error(cli("run", digits_bundle, "--input", f"image={tmp_path / 'x64.npy'}"),
                          "dtype float64, expected float32")
    np.save(tmp_path / "small.npy", np.zeros((8, 8), np.float32))
    assert_one_line_error(cli("run", digits_bundle, "--input", f"image={tmp_path / 'small.npy'}"),
                          "shape [8, 8], expected [1, 1, 8, 8]")
    assert_one_line_error(cli("run", digits_bundle, "--input", "image"), "NAME=FILE.npy")


def test_verify_passes_on_a_good_bundle(digits_bundle):
    proc = cli("verify", digits_bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == 4  # onnx and tflite, fp32 and int8


def test_verify_fails_on_a_tampered_bundle(bundle_copy):
    path = bundle_copy / "model.fp32.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    assert_one_line_error(cli("verify", bundle_copy), "model.fp32.onnx does not match its sha256")


def test_verify_fails_when_outputs_drift_from_pytorch(bundle_copy):
    """Swap the int8 file in under the fp32 name (re-hashed): integrity passes, the self-test must not."""
    import json

    from edgepack_runtime.bundle import sha256_file

    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    (bundle_copy / "model.fp32.onnx").write_bytes((bundle_copy / "model.int8.onnx").read_bytes())
    for art in manifest["artifacts"]:
        if art["name"] == "onnx-fp32":
            art["sha256"] = sha256_file(bundle_copy / "model.fp32.onnx")
    manifest_path.write_text(json.dumps(manifest))
    proc = cli("verify", bundle_copy)
    assert_one_line_error(proc, "beyond their tolerance on this device")
    assert "FAILED" in proc.stdout
    as_json = cli("verify", bundle_copy, "--json")  # the same verdict for machines, the same exit code
    assert_one_line_error(as_json, "beyond their tolerance on this device")
    results = {r["artifact"]: r for r in json.loads(as_json.stdout)["results"]}
    assert results["onnx-fp32"]["result"] == "failed" and results["onnx-int8"]["result"] == "passed"
    assert results["onnx-fp32"]["cosine"] < results["onnx-fp32"]["min_cosine"] or \
        results["onnx-fp32"]["max_abs_diff"] > results["onnx-fp32"]["tolerance"]


def test_info_json_names_the_default_and_carries_the_manifest(digits_bundle):
    import json

    proc = cli("info", digits_bundle, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["default_artifact"] == edgepack_runtime.load(digits_bundle).artifact.name
    assert info["manifest"] == json.loads((digits_bundle / "manifest.json").read_text())


def test_not_a_bundle(tmp_path):
    assert_one_line_error(cli("info", tmp_path), "not an edgepack bundle")
