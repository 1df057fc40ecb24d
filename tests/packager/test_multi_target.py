"""One build for several targets: one bundle each, with the work they agree on done once."""

import dataclasses
import json

import pytest

import edgepack
from edgepack import pipeline
from edgepack.errors import BuildError
from edgepack.formats.ncnn import NcnnFormat
from edgepack.targets import load_target
from edgepack_runtime.bundle import open_bundle
from edgepack_runtime.hostinfo import host_info

from ..conftest import DIGITS_MODEL


def _counted(patch, owner, name: str) -> list:
    """Calls of the real `owner.name` during a build, each recorded by its arguments."""
    calls, real = [], getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    patch.setattr(owner, name, spy)
    return calls


@pytest.fixture(scope="module")
def two_pis(digits_data, tmp_path_factory):
    """The Pi 5 and the Pi 4B, ONNX and ncnn: the 4B's artifacts are a subset of the 5's
    (it has no ncnn fp16), and its ncnn options agree with the 5's."""
    out = tmp_path_factory.mktemp("fleet") / "digits"
    with pytest.MonkeyPatch.context() as patch:
        exports = _counted(patch, NcnnFormat, "export")
        results = edgepack.build(DIGITS_MODEL, out, ["raspberry-pi/5", "raspberry-pi/4b"], formats=["onnx", "ncnn"],
                                 weights=digits_data / "weights.safetensors", calibration=digits_data / "calib.npz",
                                 eval_data=digits_data / "eval.npz")
    assert len(exports) == 1  # the 4B took the 5's ncnn export
    return out, results


def test_each_target_gets_its_own_bundle_in_the_folder(two_pis):
    out, results = two_pis
    assert [r.path for r in results] == [out / "raspberry-pi-5", out / "raspberry-pi-4b"]
    for result, target in zip(results, ("raspberry-pi/5", "raspberry-pi/4b"), strict=True):
        bundle = open_bundle(result.path)
        bundle.verify_integrity()
        assert bundle.manifest.target["id"] == target and bundle.manifest.name == "digits"


def test_targets_whose_presets_agree_share_the_search_but_keep_their_own_isa_notes(two_pis):
    out, results = two_pis
    pi5, pi4 = (r.manifest.artifact("onnx-int8") for r in results)
    assert pi5.sha256 == pi4.sha256 and pi5.quantization.search == pi4.quantization.search
    assert pi5.quantization.relies_on == ("asimd", "asimddp") and pi4.quantization.relies_on == ("asimd",)
    # The second target neither loaded the model nor searched again.
    assert "load" not in results[1].manifest.build["seconds"]
    assert results[1].manifest.build["seconds"]["onnx.quantize+search"] < results[0].manifest.build["seconds"][
        "onnx.quantize+search"]


def test_the_same_files_run_the_same_way_are_checked_and_timed_once(two_pis):
    """The Pi 4B's artifacts are among the Pi 5's files, run with 4 threads: its float checks
    are the Pi 5's and its bundle records only its own artifacts. Neither is timed on a host
    that does not run its kernels."""
    _, results = two_pis
    pi5, pi4 = (r.manifest for r in results)
    assert {a.name for a in pi4.artifacts} == {"onnx-fp32", "onnx-int8", "ncnn-fp32"}
    assert "ncnn-fp16" in {a.name for a in pi5.artifacts}
    # fp16 arithmetic is the fp16 recipe's knob (what decides whether targets share the artifact)
    assert pi5.artifact("ncnn-fp16").quantization.recipe["fp16_arithmetic"] is \
        load_target("raspberry-pi/5").settings("ncnn").fp16_arithmetic
    for name in ("onnx-fp32", "onnx-int8", "ncnn-fp32"):
        assert pi4.artifact(name).latency == pi5.artifact(name).latency
        assert (pi4.artifact(name).latency is not None) is pi4.artifact(name).validation.host_matches_target
    for name in ("onnx-fp32", "ncnn-fp32"):
        assert pi4.artifact(name).validation == pi5.artifact(name).validation


def test_a_float_check_and_a_timing_run_are_shared_and_labelled_for_each_target(digits_data, tmp_path):
    """The same float export checked at the same threads gives the same figures whatever the
    target: it is checked once. Whether this host runs the target's kernels (an x86 box's
    yes, a Pi's no on an x86 host) is each target's own label; only where it does is the
    artifact timed, once for the targets that agree (two timing runs would not agree to the
    microsecond)."""
    targets = ["x86-64/avx512-vnni", "x86-64/avx2", "raspberry-pi/4b"]  # all run 4 threads
    with pytest.MonkeyPatch.context() as patch:
        checks = _counted(patch, pipeline, "validate_artifact")
        results = edgepack.build(DIGITS_MODEL, tmp_path / "out", targets, formats=["onnx"],
                                 precisions=["fp32"], weights=digits_data / "weights.safetensors",
                                 calibration=digits_data / "calib.npz", eval_data=digits_data / "eval.npz")
    assert len(checks) == 1
    arts = [r.manifest.artifact("onnx-fp32") for r in results]
    host = host_info()
    for target, art in zip(targets, arts, strict=True):
        matches = load_target(target).matches_host(host, "onnx", "fp32")
        assert art.validation.host_matches_target is matches and art.accuracy.indicative is not matches
        assert (art.latency is not None) is matches
        assert dataclasses.replace(art.validation, host_matches_target=None) == \
            dataclasses.replace(arts[0].validation, host_matches_target=None)
        assert art.accuracy.metrics == arts[0].accuracy.metrics and art.sha256 == arts[0].sha256
    timed = [art.latency for art in arts if art.latency is not None]
    assert all(latency == timed[0] for latency in timed)


def test_a_bundle_is_no_folder_for_several_targets(two_pis, digits_data):
    out, results = two_pis
    before = json.loads((results[0].path / "manifest.json").read_text())
    with pytest.raises(BuildError, match="is a bundle; a build for several targets"):
        edgepack.build(DIGITS_MODEL, results[0].path, ["raspberry-pi/5", "raspberry-pi/4b"], formats=["onnx"],
                       weights=digits_data / "weights.safetensors", calibration=digits_data / "calib.npz")
    assert json.loads((results[0].path / "manifest.json").read_text()) == before


def test_shared_work_makes_once_copies_the_files_and_remembers_a_failure(tmp_path):
    from edgepack.formats import get_format
    from edgepack.shared_work import SharedWork

    shared, calls = SharedWork(), []

    def make(folder):
        def write():
            calls.append(folder)
            (tmp_path / folder / "model.onnx").write_bytes(b"onnx bytes")
            return "exported"
        return write

    for folder in ("pi-5", "pi-4b"):
        (tmp_path / folder).mkdir()
        assert shared.reuse(("onnx", 18), get_format("onnx"), tmp_path / folder / "model.onnx", make(folder)) == \
            "exported"
    assert calls == ["pi-5"] and (tmp_path / "pi-4b" / "model.onnx").read_bytes() == b"onnx bytes"

    def fail():
        calls.append("failed")
        raise BuildError("pnnx wrote no ncnn files")

    for _ in range(2):  # the next target fails the same way, without trying again
        with pytest.raises(BuildError, match="pnnx wrote no ncnn files"):
            shared.result(("ncnn", "pi"), fail)
    assert calls.count("failed") == 1
