"""The segment task: masks from dense maps, judged by mask IoU, answered over the original
image's pixels, drawn by --annotate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack_runtime import load
from edgepack_runtime.cli import main as runtime_cli
from edgepack_runtime.letterbox import Geometry
from edgepack_runtime.manifest import MaskSettings, Postprocessing, TensorSpec
from edgepack_runtime.postprocess import mask_dict
from edgepack_runtime.task_fidelity import Floors
from edgepack_runtime.tasks import Ask, task
from edgepack_runtime.tasks.segment import mask_iou, masks, to_original

from ..conftest import bright_scene

FLOORS = Floors(min_cosine=0.99, min_agreement=85.0, min_f1=0.95, min_iou=0.9)


def _maps(n: int = 4, size: int = 32) -> np.ndarray:
    """Sigmoid-like maps [N, 1, H, W]: a bright square per sample on a dark field."""
    maps = np.full((n, 1, size, size), 0.1, np.float32)
    for i in range(n):
        maps[i, 0, 4 + i:20 + i, 6:22] = 0.9
    return maps


def test_masks_threshold_one_channel_and_take_the_best_class_of_several():
    maps = _maps()
    assert masks(maps, 0.5).dtype == np.bool_ and masks(maps, 0.5)[0].sum() == 16 * 16
    assert masks(maps, 0.95).sum() == 0
    classes = np.zeros((1, 3, 4, 4), np.float32)
    classes[0, 2, :2] = 1.0
    labels = masks(classes, 0.5)
    assert labels.shape == (1, 4, 4) and set(np.unique(labels)) == {0, 2}


def test_mask_iou_of_booleans_classes_and_empty_masks():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    assert mask_iou(a.astype(np.int64), a.astype(np.int64)) == 1.0
    assert mask_iou(a.astype(np.int64), b.astype(np.int64)) < 1.0


def test_segment_is_judged_by_mask_iou_not_by_the_maps_cosine():
    reference = {"map": _maps()}
    segment = task("segment")
    same = segment.metrics(reference, reference, FLOORS)
    assert [m.name for m in same] == ["mask_iou", "mask_iou_per_image", "pixel_agreement"]
    assert same[0].value == 1.0 and same[0].floor == 0.9 and same[1].floor is None and same[2].value == 100.0
    # Values pulled just under the threshold: the maps' cosine stays high, the masks vanish.
    faded = {"map": np.where(reference["map"] > 0.5, 0.49, 0.1).astype(np.float32)}
    cosine = float(np.dot(faded["map"].ravel(), reference["map"].ravel())
                   / np.linalg.norm(faded["map"]) / np.linalg.norm(reference["map"]))
    assert cosine > 0.9
    assert segment.metrics(faded, reference, FLOORS)[0].value == 0.0
    # The declared threshold decides: at 0.45 the faded maps still show every mask.
    low = Postprocessing(output="map", kind="mask", mask=MaskSettings(threshold=0.45))
    assert segment.metrics(faded, reference, FLOORS, low)[0].value == 1.0
    # The search's error orders a nudge below a fade.
    nudged = {"map": reference["map"] + 0.01}
    errors = [segment.sample_errors(o, reference).mean() for o in (reference, nudged, faded)]
    assert errors[0] == 0 and errors[0] < errors[1] < errors[2]


def test_mask_iou_pools_the_images_so_stray_pixels_on_an_empty_one_do_not_decide():
    reference = {"map": _maps()}
    reference["map"][3] = 0.1  # a photo without an object: PyTorch's mask is empty
    stray = {"map": reference["map"].copy()}
    stray["map"][3, 0, 0, :3] = 0.9  # three pixels the artifact marks
    pooled, per_image, _ = task("segment").metrics(stray, reference, FLOORS)
    assert per_image.value == pytest.approx(0.75)  # that image's IoU is 0
    assert pooled.value == pytest.approx(3 * 256 / (3 * 256 + 3)) and pooled.value >= FLOORS.min_iou
    # Lost objects still count in full: the artifact misses one square entirely.
    lost = {"map": reference["map"].copy()}
    lost["map"][0] = 0.1
    assert task("segment").metrics(lost, reference, FLOORS)[0].value == pytest.approx(2 / 3)


def test_segment_refuses_outputs_without_a_map():
    segment = task("segment")
    assert segment.output_problem([TensorSpec("logits", (1, 10), "float32")]) is not None
    assert segment.output_problem([TensorSpec("map", (1, 1, 32, 32), "float32")]) is None


def test_a_mask_maps_back_through_a_letterbox_and_a_coarser_output_grid():
    # A 200x100 image letterboxed to 64x64: scale 0.32, 16 px of padding above and below.
    geometry = Geometry(scale_x=0.32, scale_y=0.32, pad_left=0.0, pad_top=16.0, width=200, height=100)
    grid = np.zeros((32, 32), bool)  # the output at half the input's resolution
    grid[8:24, :16] = True  # the left half of the picture area (rows 8..24 hold it)
    back = to_original(grid, Ask(geometry=geometry, input_hw=(64, 64)))
    assert back.shape == (100, 200)
    assert back[:, :100].all() and not back[:, 100:].any()


def test_pixels_a_centre_crop_cut_away_are_background():
    # 300x200 resized to 150x100 (scale 0.5), centre crop 100x100: 25 px cut left and right.
    geometry = Geometry(scale_x=0.5, scale_y=0.5, pad_left=-25.0, pad_top=0.0, width=300, height=200)
    back = to_original(np.ones((100, 100), bool), Ask(geometry=geometry, input_hw=(100, 100)))
    assert back.shape == (200, 300)
    assert not back[:, :50].any() and not back[:, 250:].any() and back[:, 50:250].all()


def test_maps_stacked_with_the_models_batch_axis_and_several_classes():
    """run_samples stacks [1, C, H, W] outputs as [N, 1, C, H, W]; classes are judged per
    class (mIoU), so a small class lost costs its share, not its pixels' share."""
    rng = np.random.default_rng(0)
    logits = rng.random((4, 1, 3, 16, 16)).astype(np.float32)
    logits[:, :, 2, :2, :2] = 5.0  # class 2: 4 pixels of 256 per image
    same = task("segment").metrics({"o": logits}, {"o": logits}, FLOORS)
    assert same[0].value == 1.0
    lost = logits.copy()
    lost[:, :, 2] = -1.0  # class 2 never wins any more
    figure = task("segment").metrics({"o": lost}, {"o": logits}, FLOORS)[0].value
    assert figure < 0.7  # classes 0 and 1 nearly whole, class 2 gone: about 2/3


def test_mask_json_is_run_lengths_that_rebuild_the_mask():
    mask = np.zeros((3, 5), bool)
    mask[1, 1:4] = True
    data = mask_dict(mask)
    assert data["shape"] == [3, 5] and data["foreground"] == pytest.approx(3 / 15)
    flat = np.repeat(data["values"], data["counts"]).reshape(data["shape"])
    assert np.array_equal(flat.astype(bool), mask)


def test_a_segmenter_bundle_answers_with_the_mask_over_the_original_image(segmenter_bundle, tmp_path):
    from PIL import Image

    manifest = json.loads((segmenter_bundle / "manifest.json").read_text())
    assert manifest["task"] == "segment"
    assert manifest["postprocessing"]["kind"] == "mask" and manifest["postprocessing"]["mask"]["threshold"] == 0.5
    photo = tmp_path / "scene.png"
    Image.fromarray(bright_scene(150, 100, (30, 20, 120, 70))).save(photo)
    prediction = load(segmenter_bundle).predict(str(photo))
    assert prediction.mask is not None and prediction.mask.shape == (100, 150)
    truth = np.zeros((100, 150), bool)
    truth[20:70, 30:120] = True
    assert mask_iou(prediction.mask, truth) > 0.9
    drawing = tmp_path / "drawn.png"
    result = CliRunner().invoke(runtime_cli, ["run", str(segmenter_bundle), "--image", str(photo), "--annotate",
                                              str(drawing)])
    assert result.exit_code == 0, result.output
    assert "drew the mask" in result.output and "mask 150x100" in result.output
    drawn = np.asarray(Image.open(drawing).convert("RGB")).astype(int)
    original = bright_scene(150, 100, (30, 20, 120, 70)).astype(int)
    assert (drawn[45, 75] != original[45, 75]).any()  # inside the mask: tinted
    assert (drawn[5, 5] == original[5, 5]).all()  # outside: untouched
    as_json = CliRunner().invoke(runtime_cli, ["run", str(segmenter_bundle), "--image", str(photo), "--json"])
    assert json.loads(as_json.output)["mask"]["shape"] == [100, 150]
