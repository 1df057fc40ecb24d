"""Bad input to `edgepack`: one readable line, non-zero exit, never a traceback."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgepack.cli import main

from ..conftest import DIGITS_MODEL


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    # A clean exit is SystemExit; anything else escaped as a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output.replace("\n", " "), result.output
    return lines[0]


def test_targets_lists_and_shows():
    listing = run_cli("targets")
    assert listing.exit_code == 0
    for target_id in ("host", "raspberry-pi/4b", "raspberry-pi/5", "x86-64/avx2", "x86-64/avx512-vnni",
                      "arm64/generic"):
        assert target_id in listing.output
    shown = run_cli("targets", "show", "raspberry-pi/5")
    assert shown.exit_code == 0
    assert 'cpu = "Cortex-A76"' in shown.output and "[onnx.int8]" in shown.output
    assert '"asimddp"' in shown.output


def test_unknown_target(tiny_model, tmp_path):
    one_line_error(run_cli("targets", "show", "raspbery-pi/5"), "did you mean 'raspberry-pi/5'")
    result = run_cli("build", f"{tiny_model}:create", "--target", "x86-64/avx3", "-o", tmp_path / "b")
    one_line_error(result, "unknown target 'x86-64/avx3'", "edgepack targets")


def test_missing_factory(tiny_model, tmp_path):
    result = run_cli("build", f"{tiny_model}:build_it", "-o", tmp_path / "b")
    one_line_error(result, "has no function 'build_it'", "create")


def test_model_without_colon(tiny_model, tmp_path):
    one_line_error(run_cli("build", str(tiny_model), "-o", tmp_path / "b"), "FILE.py:FACTORY")


@pytest.mark.parametrize("spec", ["x:1x4", "x:1xfourx:float32", "x:1x4:complex64", "x:0x4:float32"])
def test_wrong_input_syntax(tiny_model, tmp_path, spec):
    result = run_cli("build", f"{tiny_model}:create", "--input", spec, "-o", tmp_path / "b")
    one_line_error(result, f"--input {spec!r}")


def test_calibration_missing_an_input(tiny_model, tmp_path):
    np.savez(tmp_path / "calib.npz", y=np.zeros((4, 4), np.float32))
    result = run_cli("build", f"{tiny_model}:create", "--calibration", tmp_path / "calib.npz", "-o", tmp_path / "b")
    one_line_error(result, "no array for input(s) ['x']", "['y']")
    assert not (tmp_path / "b").exists()


def test_calibration_with_the_wrong_shape(tiny_model, tmp_path):
    np.savez(tmp_path / "calib.npz", x=np.zeros((4, 5), np.float32))
    result = run_cli("build", f"{tiny_model}:create", "--calibration", tmp_path / "calib.npz", "-o", tmp_path / "b")
    one_line_error(result, "has shape [4, 5]", "needs [N, 4]")


def test_too_few_calibration_samples_to_judge_int8(tiny_model, tmp_path):
    np.savez(tmp_path / "calib.npz", x=np.zeros((4, 4), np.float32))
    result = run_cli("build", f"{tiny_model}:create", "--calibration", tmp_path / "calib.npz", "-o", tmp_path / "b")
    one_line_error(result, "has 4 samples in 4 groups: too few to choose int8 on some", "pass --eval eval.npz")


@pytest.mark.parametrize("array, message", [
    (np.array([object()] * 4, dtype=object), "cannot read --calibration"),
    (np.full((16, 4), np.nan, np.float32), "holds NaN or infinite values"),
])
def test_calibration_with_objects_or_nan(tiny_model, tmp_path, array, message):
    np.savez(tmp_path / "calib.npz", x=array)
    result = run_cli("build", f"{tiny_model}:create", "--calibration", tmp_path / "calib.npz", "-o", tmp_path / "b")
    one_line_error(result, message)


@pytest.mark.parametrize("body, message", [
    ("def forward(self, x):\n        raise RuntimeError('boom')", "forward() raised RuntimeError: boom"),
    ("def __init__(self):\n        import sys; sys.exit(3)", "raised SystemExit"),
])
def test_a_model_that_raises_or_exits_is_one_line(tmp_path, body, message):
    model = tmp_path / "bad.py"
    model.write_text(f"import torch\nclass M(torch.nn.Module):\n    {body}\n"
                     "def create():\n    return M()\n"
                     "def example_inputs():\n    return {'x': torch.zeros(1, 4)}\n")
    result = run_cli("build", f"{model}:create", "--formats", "onnx", "--precisions", "fp32", "-o", tmp_path / "b")
    one_line_error(result, message)


def test_calibration_that_is_not_an_npz(tiny_model, tmp_path):
    (tmp_path / "calib.npz").write_text("not a zip")
    result = run_cli("build", f"{tiny_model}:create", "--calibration", tmp_path / "calib.npz", "-o", tmp_path / "b")
    one_line_error(result, "cannot read --calibration")


def _tiny_with_own_weights(tiny_model):
    """The tiny model from its factory, then weights of its own: a bundle that computes it
    took them from --weights, not from the factory's seeded init."""
    sys.path.insert(0, str(tiny_model.parent))
    try:
        import tiny  # the same module the factory lives in, so a pickle of it can be loaded back
        module, fresh = tiny.create(), tiny.create()
    finally:
        sys.path.pop(0)
    with torch.no_grad():
        module.fc.weight.copy_(torch.linspace(-1, 1, 12).reshape(3, 4))
        module.fc.bias.fill_(0.25)
    return module, fresh


def assert_computes(bundle: Path, module, fresh) -> None:
    import edgepack_runtime

    x = np.array([[0.5, -1.0, 2.0, 1.5]], np.float32)
    with torch.no_grad():
        wanted, factory_s = module(torch.from_numpy(x)).numpy(), fresh(torch.from_numpy(x)).numpy()
    assert not np.allclose(wanted, factory_s, atol=1e-3)  # else this could not tell the weights apart
    got = edgepack_runtime.load(bundle, artifact="onnx-fp32").run({"x": x})
    np.testing.assert_allclose(next(iter(got.values())), wanted, atol=1e-5)


def test_full_pickle_needs_trust_checkpoint(tiny_model, tmp_path):
    module, fresh = _tiny_with_own_weights(tiny_model)
    torch.save(module, tmp_path / "full.pt")
    args = ("build", f"{tiny_model}:create", "--weights", tmp_path / "full.pt", "--formats", "onnx",
            "--precisions", "fp32")
    line = one_line_error(run_cli(*args, "-o", tmp_path / "a"))
    assert f"{tmp_path / 'full.pt'} is a full pickle, not a plain state_dict" in line, line
    assert "pass --trust-checkpoint if you trust its source" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.pt"]  # no bundle, no staging directory left
    trusted = run_cli(*args, "--trust-checkpoint", "-o", tmp_path / "b")
    assert trusted.exit_code == 0, trusted.output
    assert "wrote " in trusted.output and (tmp_path / "b" / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "full.pt"]
    assert_computes(tmp_path / "b", module, fresh)  # the pickle's weights, not the factory's


def test_state_dict_pt_loads_with_weights_only(tiny_model, tmp_path):
    module, fresh = _tiny_with_own_weights(tiny_model)
    torch.save(module.state_dict(), tmp_path / "w.pt")
    result = run_cli("build", f"{tiny_model}:create", "--weights", tmp_path / "w.pt", "--formats", "onnx",
                     "--precisions", "fp32", "-o", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "error" not in result.output.lower() and "onnx-fp32" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "w.pt"]
    assert_computes(tmp_path / "b", module, fresh)


def test_meta_is_recorded_in_the_manifest(tiny_model, tmp_path):
    args = ("build", f"{tiny_model}:create", "--formats", "onnx", "--precisions", "fp32")
    bad = run_cli(*args, "--meta", "git", "-o", tmp_path / "bad")
    assert "--meta 'git' must look like KEY=VALUE" in one_line_error(bad) and bad.exit_code == 2
    assert not any(tmp_path.iterdir())
    built = run_cli(*args, "--meta", "git=3f2a1c", "--meta", "dataset = digits-v3", "--meta", "args=lr=0.1",
                    "-o", tmp_path / "b")
    assert built.exit_code == 0, built.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["build"]["meta"] == {"git": "3f2a1c", "dataset": "digits-v3", "args": "lr=0.1"}


def test_weights_for_another_architecture(tiny_model, digits_data, tmp_path):
    result = run_cli("build", f"{tiny_model}:create", "--weights", digits_data / "weights.safetensors",
                     "-o", tmp_path / "b")
    one_line_error(result, "does not fit the model")


CONVERTER_NOISE = re.compile(r"^[IWEF]\d{4} |absl|XNNPACK|TensorFlow|\[[EW]:onnxruntime|_pytree|oneDNN")


@pytest.mark.slow  # a whole build of every format in a child process
def test_build_prints_the_artifact_table_through_the_real_console_script(digits_data, tmp_path):
    cli = Path(sys.executable).parent / "edgepack"
    # rich draws as on a (wide) terminal: the status line too
    terminal = {**os.environ, "TTY_COMPATIBLE": "1", "COLUMNS": "250"}
    proc = subprocess.run(
        [cli, "build", DIGITS_MODEL, "--target", "host", "-o", tmp_path / "digits",
         "--weights", digits_data / "weights.safetensors", "--calibration", digits_data / "calib.npz",
         "--eval", digits_data / "eval.npz", "--formats", "onnx,tflite"],
        capture_output=True, text=True, timeout=300, env=terminal,
    )
    assert proc.returncode == 0, proc.stderr
    for fragment in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8", "parity", "top-1", "wrote"):
        assert fragment in proc.stdout
    assert "Traceback" not in proc.stderr
    # The status line, on stderr: the time so far and the search's candidate under way.
    assert re.search(r"building \(0:\d\d\): onnx-int8 candidate 1 of \d", proc.stderr), proc.stderr[-2000:]
    assert "building" not in proc.stdout
    # The converters' and C++ libraries' own log lines (absl, TensorFlow Lite, torch's
    # logging, onnxruntime) go to file descriptors 1 and 2 directly: none reaches the user.
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if CONVERTER_NOISE.search(line)]
    assert not noise, noise
    as_json = subprocess.run(  # the same build for scripts: stdout is one JSON document
        [cli, "build", DIGITS_MODEL, "--target", "host", "-o", tmp_path / "digits-json", "--json",
         "--weights", digits_data / "weights.safetensors", "--calibration", digits_data / "calib.npz",
         "--formats", "onnx", "--precisions", "fp32"],
        capture_output=True, text=True, timeout=300, env=terminal,
    )
    assert as_json.returncode == 0, as_json.stderr
    assert "building" not in as_json.stderr  # no status line for scripts
    doc = json.loads(as_json.stdout)
    assert Path(doc["path"]) == (tmp_path / "digits-json").resolve()
    assert [(a["name"], a["status"]) for a in doc["manifest"]["artifacts"]] == [("onnx-fp32", "ok")]


def test_help_targets_and_compare_run_without_torch():
    """torch and the converters are imported only by commands that build (issue #11)."""
    script = (
        "import sys\n"
        "for heavy in ('torch', 'onnx', 'onnxruntime', 'litert_torch', 'ai_edge_quantizer', 'nncf'):\n"
        "    sys.modules[heavy] = None  # any import of them now raises ImportError\n"
        "from edgepack.cli import main\n"
        "for args in (['--help'], ['targets'], ['targets', 'show', 'raspberry-pi/5'], ['compare', '--help'],\n"
        "             ['build', '--help']):\n"
        "    main(args, standalone_mode=False)\n"
        "print('OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), proc.stderr[-2000:]


def test_targets_json_lists_every_resolved_profile():
    import json

    from edgepack.targets import load_target, target_ids

    listed = json.loads(run_cli("targets", "--json").stdout)
    assert [t["id"] for t in listed] == target_ids()
    shown = json.loads(run_cli("targets", "show", "raspberry-pi/5", "--json").stdout)
    assert shown == json.loads(json.dumps(load_target("raspberry-pi/5").to_dict()))  # tuples become lists
    assert shown == listed[target_ids().index("raspberry-pi/5")]


def test_quiet_hides_warnings_and_verbose_shows_each_stage(tiny_model, tmp_path):
    args = ("build", f"{tiny_model}:create", "--formats", "onnx", "--target", "x86-64/avx512-vnni")

    def stages(result) -> set[str]:  # -v prints each stage on a line of its own
        return {line.strip() for line in result.output.splitlines()} & {"onnx.export", "onnx.quantize+search"}

    quiet = run_cli("-q", *args, "-o", tmp_path / "quiet")
    assert quiet.exit_code == 0, quiet.output
    assert "RANDOM" not in quiet.output and not stages(quiet)
    normal = run_cli(*args, "-o", tmp_path / "normal")
    assert "RANDOM" in normal.output and not stages(normal)  # no calibration data: warned
    verbose = run_cli("-v", *args, "-o", tmp_path / "verbose")
    assert "RANDOM" in verbose.output and stages(verbose) == {"onnx.export", "onnx.quantize+search"}


def test_verbose_shows_what_caused_an_error(tmp_path, monkeypatch):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "broken.toml").write_text("extends = \n")
    monkeypatch.setenv("EDGEPACK_TARGETS", str(tmp_path))
    quiet = run_cli("targets", "show", "test/broken")
    one_line_error(quiet, "target profile test/broken is not valid TOML")
    assert "caused by" not in quiet.output
    verbose = run_cli("-v", "targets", "show", "test/broken")
    one_line_error(verbose, "target profile test/broken is not valid TOML")
    assert "  caused by: TOMLDecodeError: " in verbose.output


def test_a_failed_converter_s_own_output_is_kept_for_verbose():
    import logging

    from edgepack.formats.output import LOG, converter_output

    class Kept(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    kept, level = Kept(), LOG.level
    LOG.addHandler(kept)
    LOG.setLevel(logging.INFO)  # -v: not -vv, which would let the converter print
    try:
        with pytest.raises(ValueError), converter_output():
            print("step 1 ok")
            print("unsupported op: aten::weird", file=sys.stderr)
            raise ValueError("conversion failed")
    finally:
        LOG.removeHandler(kept)
        LOG.setLevel(level)
    (said,) = kept.lines
    assert "unsupported op: aten::weird" in said and "step 1 ok" in said
