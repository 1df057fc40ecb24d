"""The judged samples' folds: whole groups, spread over the folds, never chosen and reported twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.closeness import clearly_closer, group_errors
from edgepack.holdout import deal_folds
from edgepack_runtime.tasks import task


def test_groups_stay_whole_and_sources_spread_over_both_parts():
    groups = np.repeat(np.arange(10), 3)  # 10 photos, 3 views each, ordered by photo
    split = deal_folds(groups, len(groups), crossfit=False)
    even, odd = split.indices("even"), split.indices("odd")
    assert not set(groups[even]) & set(groups[odd])
    assert sorted(np.concatenate([even, odd]).tolist()) == list(range(30)) == split.indices("all").tolist()
    assert set(groups[even]) == {0, 2, 4, 6, 8}  # dealt in turn: both halves see every part of the data
    assert split.other("even") == "odd"


def test_crossfit_runs_each_fold_on_the_artifact_that_never_saw_it():
    split = deal_folds(None, 12, crossfit=True)
    samples = {"x": np.arange(12, dtype=np.float32)[:, None]}
    seen = []

    def run_fold(fold, inputs):
        calibrated_on = split.calibration_without(fold, samples)["x"][:, 0]
        assert not set(inputs["x"][:, 0]) & set(calibrated_on)  # out of sample
        seen.append(fold)
        return {"y": inputs["x"] * 10}

    indices = split.indices("odd")
    out = split.crossfitted(indices, samples, run_fold)
    np.testing.assert_array_equal(out["y"][:, 0], indices * 10)  # back in the callers' order
    assert sorted(seen) == [1, 3]


def test_answer_error_ranks_a_closer_classifier_first():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((40, 10))
    close, far = ref + 0.01 * rng.standard_normal(ref.shape), ref + 0.5 * rng.standard_normal(ref.shape)
    errors = [task("classify").sample_errors({"o": o}, {"o": ref}).mean() for o in (ref, close, far)]
    assert errors[0] == 0 and errors[0] < errors[1] < errors[2]
    assert group_errors(np.array([1.0, 3.0, 5.0]), np.array([4, 4, 2])).tolist() == [2.0, 5.0]


def test_answer_error_of_a_classifier_counts_noise_on_every_class_that_could_take_the_lead():
    # Two artifacts keep PyTorch's top-1 margin exactly; one also moves the runner-up classes,
    # which flips the user's next, less certain images. Only the logits' noise shows it.
    ref = np.tile(np.array([[5.0, 3.0, 2.9, 0.0, 0.0, 0.0]]), (8, 1))
    quiet, noisy = ref.copy(), ref.copy()
    noisy[:, 2] -= 1.5
    noisy[:, 3] += 1.5
    err = [task("classify").sample_errors({"o": o}, {"o": ref}).mean() for o in (quiet, noisy)]
    assert err[0] == 0 < err[1]


def test_answer_error_of_a_detector_sees_scores_near_the_threshold():
    ref = np.zeros((2, 6, 16), np.float32)  # [N, 4 + 2 classes, 16 anchors]
    ref[:, :4] = np.array([100.0, 100.0, 20.0, 20.0], np.float32)[None, :, None]  # cx, cy, w, h
    ref[:, 4, :4] = 0.3  # four boxes just above the 0.25 threshold
    nudged, dropped = ref.copy(), ref.copy()
    nudged[:, 4, :4] = 0.29
    dropped[:, 4, :4] = 0.2  # under the threshold: the boxes disappear
    err = [task("detect").sample_errors({"o": o}, {"o": ref}).mean() for o in (ref, nudged, dropped)]
    assert err[0] == 0 and err[0] < err[1] < err[2]


def _shipped(value: float, low: float, groups: int):
    from edgepack_runtime.manifest import Accuracy, Artifact, TaskMetric

    f1 = TaskMetric("f1", value, low, 1.0, samples=groups, floor=0.95, groups=groups)
    accuracy = Accuracy(samples=groups, indicative=False, metrics=(f1,), split="confirmation", groups=groups)
    return Artifact(name="onnx-int8", format="onnx", precision="int8", status="ok", accuracy=accuracy)


def test_the_build_says_when_the_groups_cannot_promise_the_floor():
    from edgepack.pipeline import _too_little_data

    note = _too_little_data(_shipped(0.962, 0.947, 26))  # the YOLO example's onnx-int8
    assert "26 independent groups cannot promise it" in note and "about 41 groups" in note
    assert "about 73 groups" in _too_little_data(_shipped(1.0, 0.75, 12))  # perfect: each group one trial
    assert _too_little_data(_shipped(0.99, 0.96, 26)) is None  # the interval clears the floor
    assert _too_little_data(_shipped(0.94, 0.90, 26)) is None  # below the floor: left out, said elsewhere


def test_clearly_closer_needs_the_groups_to_agree():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.1, 0.3, 12)
    assert clearly_closer(base, base + 0.1)  # closer in every one of 12 groups
    assert not clearly_closer(base, base * 1.1)  # clear, but too little to matter
    assert not clearly_closer(base, base) and not clearly_closer(base + 0.1, base)
    noisy = base + rng.normal(0, 0.2, 12)  # same on average, scattered: not clearly either way
    assert not clearly_closer(base, noisy + (base - noisy).mean())
    assert clearly_closer(base[:4], base[:4] + 0.1) and not clearly_closer(base[:4], base[:4] + [0.1, 0.1, 0.1, -0.01])


def test_a_noisier_artifact_that_buys_no_speed_is_left_out_for_a_closer_one():
    import dataclasses

    from edgepack.pipeline import _dominated, _leave_out
    from edgepack_runtime.manifest import Golden, Manifest
    from edgepack_runtime.verdict import PASSED, Verdict

    ok = Verdict("onnx-int8", PASSED, max_abs_diff=0.0, tolerance=1.0, samples=4, backend="test", host={},
                 host_matches_target=True)
    static = dataclasses.replace(_shipped(0.97, 0.9, 12), validation=ok)
    dynamic = dataclasses.replace(static, name="onnx-dynamic-int8", precision="dynamic-int8")
    tflite = dataclasses.replace(static, name="tflite-int8", format="tflite")

    def manifest(*artifacts):
        return Manifest(schema_version="2.4", name="m", created="", target={}, inputs=(), outputs=(),
                        artifacts=artifacts, golden=Golden(path="g", sha256="", samples=4), toolchain={},
                        accuracy_tolerance=1.0)

    errors = {"onnx-int8": np.full(12, 0.12), "onnx-dynamic-int8": np.full(12, 0.17), "tflite-int8": np.full(12, 0.3)}
    rounds = lambda ms: {"p50_ms": ms, "rounds_ms": [ms] * 8}  # noqa: E731
    same = manifest(static, dynamic)
    beaten = _dominated(same, {"onnx-int8": rounds(10.0), "onnx-dynamic-int8": rounds(9.5)}, errors)
    assert list(beaten) == ["onnx-dynamic-int8"] and "onnx-int8 is clearly closer" in beaten["onnx-dynamic-int8"]
    # Clearly faster: it stays on the accuracy-speed front and ships.
    assert _dominated(same, {"onnx-int8": rounds(10.0), "onnx-dynamic-int8": rounds(5.0)}, errors) == {}
    # Another format: a device with only that backend still gets its int8.
    assert _dominated(manifest(static, tflite), {"onnx-int8": rounds(10.0), "tflite-int8": rounds(10.0)}, errors) == {}
    # Asked for by name: it ships anyway.
    kept = _leave_out(same, Path("."), keep=lambda a: True, dominated=beaten)
    assert [a.status for a in kept.artifacts] == ["ok", "ok"]
