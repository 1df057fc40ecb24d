"""The judged samples' folds: whole groups, spread over the folds, never chosen and reported twice."""

from __future__ import annotations

import numpy as np

from edgepack.closeness import group_errors, sample_errors
from edgepack.holdout import deal_folds


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
    errors = [sample_errors("classify", {"o": o}, {"o": ref}).mean() for o in (ref, close, far)]
    assert errors[0] == 0 and errors[0] < errors[1] < errors[2]
    assert group_errors(np.array([1.0, 3.0, 5.0]), np.array([4, 4, 2])).tolist() == [2.0, 5.0]


def test_answer_error_of_a_detector_sees_scores_near_the_threshold():
    ref = np.zeros((2, 6, 16), np.float32)  # [N, 4 + 2 classes, 16 anchors]
    ref[:, :4] = np.array([100.0, 100.0, 20.0, 20.0], np.float32)[None, :, None]  # cx, cy, w, h
    ref[:, 4, :4] = 0.3  # four boxes just above the 0.25 threshold
    nudged, dropped = ref.copy(), ref.copy()
    nudged[:, 4, :4] = 0.29
    dropped[:, 4, :4] = 0.2  # under the threshold: the boxes disappear
    err = [sample_errors("detect", {"o": o}, {"o": ref}).mean() for o in (ref, nudged, dropped)]
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
