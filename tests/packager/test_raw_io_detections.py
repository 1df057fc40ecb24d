"""Declaring a detector at build time: --postprocess detections checks the output is
[1, 4 + classes, anchors] with class scores, --labels counts its classes, and
--preprocess spells Ultralytics' letterbox (letterbox=HxW, pad=V, the yolo preset) in
every form the other keys take."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.errors import ModelSourceError
from edgepack.raw_io import declare
from edgepack_runtime.manifest import DetectionSettings, ImageSteps, TensorSpec

IMAGE = (TensorSpec("images", (1, 3, 640, 640), "float32"),)
HEAD = (TensorSpec("output0", (1, 84, 8400), "float32"),)  # YOLOv8n on COCO: 4 + 80 classes


def reference(shape=(1, 84, 8400), scores=(0.0, 1.0)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = rng.uniform(0, 640, (2, *shape)).astype(np.float32)
    out[:, :, 4:] = rng.uniform(*scores, (2, shape[0], shape[1] - 4, shape[2]))
    return {"output0": out}


def _image(preprocess, inputs=IMAGE) -> ImageSteps:
    return declare(inputs, HEAD, reference(), preprocess=preprocess).preprocessing.image


def test_detections_with_labels(tmp_path):
    labels = tmp_path / "coco.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(80)) + "\n\n")
    raw = declare(IMAGE, HEAD, reference(), preprocess="yolo", labels=labels, postprocess="detections")
    post = raw.postprocessing
    assert ((post.kind, post.output, post.softmax, post.detection)
            == ("detections", "output0", False, DetectionSettings()))
    assert post.labels.path == "labels.txt" and raw.files["labels.txt"].decode().splitlines()[79] == "class 79"
    unlabelled = declare(IMAGE, HEAD, reference(), postprocess="detections").postprocessing
    assert unlabelled.labels is None and unlabelled.kind == "detections"


@pytest.mark.parametrize("shape, message", [
    ((1, 4, 8400), r"\[1, 4 \+ classes, anchors\]"),  # boxes without a class
    ((2, 84, 8400), r"\[1, 4 \+ classes, anchors\]"),
    ((1, 84), r"\[1, 4 \+ classes, anchors\]"),
])
def test_outputs_that_are_not_a_yolo_head_are_refused(shape, message):
    outputs = (TensorSpec("output0", shape, "float32"),)
    refs = {"output0": np.zeros((2, *shape), np.float32)}
    with pytest.raises(ModelSourceError, match=message):
        declare(IMAGE, outputs, refs, postprocess="detections")


def test_scores_outside_0_to_1_are_a_head_without_its_sigmoid():
    with pytest.raises(ModelSourceError, match="not class scores in 0..1; export the head with its sigmoid"):
        declare(IMAGE, HEAD, reference(scores=(-5.0, 5.0)), postprocess="detections")
    # Ultralytics' head transposed ([1, anchors, 4 + classes]) has the right rank; its rows 4..
    # hold box coordinates in pixels, so the same check catches it.
    transposed = (TensorSpec("output0", (1, 8400, 84), "float32"),)
    refs = {"output0": np.moveaxis(reference()["output0"], -1, -2).copy()}
    with pytest.raises(ModelSourceError, match="not class scores in 0..1"):
        declare(IMAGE, transposed, refs, postprocess="detections")


def test_labels_count_the_classes_not_the_box_rows(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(84)) + "\n")
    with pytest.raises(ModelSourceError, match="has 84 labels, output 'output0' .* has 80 classes"):
        declare(IMAGE, HEAD, reference(), labels=labels, postprocess="detections")


def test_the_yolo_preset_and_letterbox_keys_agree_in_every_form(tmp_path):
    steps = _image("yolo")
    assert (steps.resize, steps.letterbox, steps.pad_value, steps.crop, steps.scale, steps.channels, steps.layout) == (
        (640, 640), True, 114, (), 1 / 255, "rgb", "nchw")
    (tmp_path / "pre.toml").write_text("[image]\nletterbox = [640, 640]\npad = 114\nscale = 0.00392156862745098\n")
    assert _image("letterbox=640x640 pad=114 scale=1/255") == steps == _image(str(tmp_path / "pre.toml"))
    assert _image({"letterbox": 640, "scale": 1 / 255}) == steps == _image({"preset": "yolo"})
    assert _image({"resize": (640, 640), "letterbox": True, "scale": 1 / 255}) == steps
    assert _image("yolo pad=0").pad_value == 0
    wide = (TensorSpec("images", (1, 3, 384, 640), "float32"),)
    assert _image("yolo", wide).resize == (384, 640)


@pytest.mark.parametrize("spec, message", [
    ("letterbox=640x640 resize=640", "give letterbox or resize, not both"),
    ("yolo pad=300", "pad_value must be a pixel value"),
    ("yolo pad=grey", "pad"),
    ("yolo crop=640", "letterbox needs resize=HxW and no crop"),
    ("letterbox=320x320", "makes 320x320 images, input 'images' takes 640x640"),
    ("yolov8", "neither a preset"),
])
def test_letterbox_misfits_are_one_error(spec, message):
    with pytest.raises(ModelSourceError, match=message):
        _image(spec)
