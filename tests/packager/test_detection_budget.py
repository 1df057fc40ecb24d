"""A detector is judged by its detections after NMS, never by one cosine over its head.

The model: YOLO-shaped ([1, 4 + classes, anchors], boxes in pixels of a 640x640 input,
then sigmoid class scores), with fixed weights that find coloured squares on synthetic
images. Quantized as a whole, its head's one per-tensor scale (spanning ~640 px) rounds
every score to zero while the whole-output cosine stays near 1: the budget must see it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgepack
from edgepack.formats import Exported, QuantPlan, get_format
from edgepack.targets import load_target
from edgepack_runtime import load
from edgepack_runtime.parity import fidelity, run_samples
from edgepack_runtime.task_fidelity import Floors
from edgepack_runtime.tasks import task

pytestmark = pytest.mark.slow  # a 640x640 model through the whole int8 search

SIZE, CELL, CLASSES = 640, 32, 3
GRID = SIZE // CELL


class TinyYolo(torch.nn.Module):
    """Per 32x32 cell: the mean colour (a strided conv) → class logits and box size (1x1
    convs), decoded as Ultralytics' exported head does (centres on the grid, in pixels)."""

    def __init__(self):
        super().__init__()
        self.pool = torch.nn.Conv2d(3, 3, CELL, stride=CELL, bias=False)
        self.mix = torch.nn.Conv2d(3, 8, 1)
        self.cls = torch.nn.Conv2d(8, CLASSES, 1)
        self.size = torch.nn.Conv2d(8, 2, 1)
        with torch.no_grad():
            self.pool.weight.zero_()
            for c in range(3):
                self.pool.weight[c, c] = 1.0 / CELL ** 2
            self.mix.weight.zero_()
            self.mix.bias.zero_()
            for c in range(3):
                self.mix.weight[c, c] = 1.0  # colour c, kept
                self.mix.weight[3 + c, c] = -1.0  # and its opposite, so ReLU keeps both signs
            self.mix.weight[6, :] = 1.0 / 3  # brightness
            self.cls.weight.zero_()
            for c in range(CLASSES):  # a class fires where its colour dominates the others
                self.cls.weight[c, c] = 16.0
                self.cls.weight[c, 6] = -8.0
            self.cls.bias.fill_(-5.0)
            self.size.weight.zero_()
            self.size.weight[:, 6] = 1.5
            self.size.bias.fill_(0.0)
        ys, xs = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
        self.register_buffer("centres", torch.stack([xs, ys]).reshape(1, 2, -1).float() * CELL + CELL / 2)

    def forward(self, images):
        features = torch.relu(self.mix(self.pool(images)))
        scores = torch.sigmoid(self.cls(features)).flatten(2)
        wh = CELL * (1.0 + torch.exp(self.size(features))).flatten(2)
        return torch.cat([self.centres.expand(images.shape[0], -1, -1), wh, scores], dim=1)


def _images(count: int, seed: int) -> np.ndarray:
    """Dark noisy images with 1-3 squares of a pure colour each, on the grid."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.15, (count, 3, SIZE, SIZE)).astype(np.float32)
    for image in images:
        for _ in range(rng.integers(1, 4)):
            colour, side = rng.integers(0, 3), rng.integers(2, 5) * CELL
            x, y = rng.integers(0, GRID - side // CELL, 2) * CELL
            image[colour, y:y + side, x:x + side] = rng.uniform(0.7, 1.0)
    return images


@pytest.fixture(scope="module")
def detector_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("detector") / "yolo"
    result = edgepack.build(TinyYolo().eval(), out, "host", inputs={"images": torch.zeros(1, 3, SIZE, SIZE)},
                            formats=["onnx"], calibration={"images": _images(16, 1)},
                            eval_data={"images": _images(12, 2)}, task="detect")
    return result


def test_whole_graph_int8_collapses_and_cosine_hides_it(detector_build, tmp_path):
    """The trap this guards against: static int8 of the whole graph keeps the head's
    cosine near 1 while every detection is lost."""
    manifest = detector_build.manifest
    fp32 = detector_build.path / manifest.artifact("onnx-fp32").path
    whole = tmp_path / "whole.onnx"
    from edgepack_runtime.precision import precision

    fmt, profile, int8 = get_format("onnx"), load_target("host"), precision("int8")
    recipe = fmt.recipes(profile, int8)[0]
    result = fmt.quantize(Exported(fp32), whole, profile, QuantPlan(int8, recipe), {"images": _images(16, 1)[:, None]})
    assert result.float_ops == ()  # the whole graph quantized
    inputs = {"images": _images(12, 2)[:, None]}  # [N, *input shape]
    reference = run_samples(load(detector_build.path, artifact="onnx-fp32").run, inputs)
    from edgepack_runtime.backends import open_session

    session = open_session("onnx", whole, 1, manifest.inputs, manifest.outputs, None)
    quantized = run_samples(session.run, inputs)
    assert fidelity(quantized, reference).cosine > 0.99  # the whole-tensor figure says "fine"
    f1 = task("detect").metrics(quantized, reference, Floors(0.99, 90, 0.95))[0]
    assert f1.name == "f1" and f1.value < 0.5, f1  # the detections say otherwise


def test_detector_ships_only_int8_that_keeps_its_detections(detector_build):
    manifest = detector_build.manifest
    assert manifest.task == "detect"
    for art in manifest.artifacts:
        assert art.accuracy is not None and art.accuracy.metrics[0].name == "f1"
        if art.status == "ok":
            assert art.accuracy.metrics[0].value >= 0.95, art.accuracy.metrics
            assert art.accuracy.within_budget
        else:  # left out: the reason names the detection figure
            assert "detection F1" in (art.error or ""), art.error
    # Shipped or left out, every int8 candidate kept the tail float (the task's float scope,
    # what lets a detector's int8 hold), and the manifest names its ops in one place.
    from edgepack.formats.onnx import _op_graph
    from edgepack.islands import tail

    int8 = manifest.artifact("onnx-int8")
    assert all(c["keeps_float"]["tail"] for c in int8.quantization.search if "recipe" in c)
    head = tail(_op_graph(detector_build.path / manifest.artifact("onnx-fp32").path))
    assert any(op.startswith("node_Conv") or op.startswith("node_conv") for op in head)  # the final 1x1 convs
    assert set(head) <= set(int8.quantization.float_ops)
    default = load(detector_build.path)
    assert default.artifact.accuracy.metrics[0].value >= 0.95
