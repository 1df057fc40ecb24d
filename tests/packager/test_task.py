"""The model's task: asked, read from the declared answers, or guessed from the outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.errors import ModelSourceError
from edgepack.task import infer_task
from edgepack_runtime.manifest import DetectionSettings, Postprocessing, TensorSpec

MAP = [TensorSpec("map", (1, 1, 32, 32), "float32")]
LOGITS = [TensorSpec("logits", (1, 10), "float32")]
REFERENCE = {"map": np.random.default_rng(0).random((4, 1, 32, 32)), "logits": np.random.default_rng(0).random((4, 10))}


def test_segment_declares_its_mask_with_the_threshold_asked():
    judged = infer_task("segment", None, MAP, REFERENCE, mask_threshold=0.3)
    assert judged.name == "segment" and judged.answer is not None
    assert judged.answer.kind == "mask" and judged.answer.output == "map" and judged.answer.mask is not None
    assert judged.answer.mask.threshold == 0.3


def test_guessed_tasks_and_answers_that_decide_the_task():
    assert infer_task(None, None, LOGITS, REFERENCE).name == "classify"
    assert infer_task(None, None, MAP, REFERENCE).name == "segment"  # one channel of probabilities
    depth = {"map": REFERENCE["map"] * 10}
    assert infer_task(None, None, MAP, depth).name == "generic"  # not probabilities: a depth map, say
    post = Postprocessing(output="map", kind="mask")
    assert infer_task(None, post, MAP, REFERENCE).name == "segment"


@pytest.mark.parametrize("requested, post, outputs, threshold, says", [
    ("segment", None, LOGITS, None, "needs a dense first output"),
    ("classify", None, LOGITS, 0.5, "--mask-threshold applies to dense outputs"),
    ("detect", None, MAP, None, "needs one output [1, 4 + classes, anchors]"),
    ("segmnt", None, MAP, None, "did you mean 'segment'"),
    ("segment", Postprocessing(output="map", kind="detections", detection=DetectionSettings()), MAP, None,
     "not with the declared detections"),
])
def test_a_task_that_cannot_fit_is_one_clear_line(requested, post, outputs, threshold, says):
    with pytest.raises(ModelSourceError, match=says.replace("[", r"\[").replace("+", r"\+")):
        infer_task(requested, post, outputs, REFERENCE, mask_threshold=threshold)


def test_a_deeply_supervised_net_of_probability_maps_is_a_mask_judged_on_its_first():
    maps = [TensorSpec(f"d{i}", (1, 1, 32, 32), "float32") for i in range(3)]
    reference = {f"d{i}": REFERENCE["map"] for i in range(3)}
    judged = infer_task(None, None, maps, reference)
    assert judged.name == "segment" and judged.answer is not None and judged.answer.output == "d0"


def test_a_mask_threshold_that_is_no_number_is_refused():
    with pytest.raises(ModelSourceError, match="finite"):
        infer_task("segment", None, MAP, REFERENCE, mask_threshold=float("nan"))
