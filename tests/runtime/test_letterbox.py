"""Ultralytics-exact letterbox (schema 2.3): `resize_linear` against OpenCV itself, the
ImagePipeline's letterbox tensor against Ultralytics' own LetterBox on the same PNG files
(through OpenCV when it is importable and through numpy when it is not), and the
Geometry that maps detections back to the original image."""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2  # the dev extra's opencv-python-headless: the reference, never a runtime dependency
import numpy as np
import pytest

from edgepack_runtime import letterbox as letterbox_module
from edgepack_runtime.errors import InputError
from edgepack_runtime.letterbox import Geometry, letterbox, resize, resize_backend, resize_linear
from edgepack_runtime.manifest import ImageSteps, TensorSpec
from edgepack_runtime.preprocess import ImagePipeline

from ..conftest import run_with_ultralytics

ROOT = Path(__file__).resolve().parents[2]
INPUT_H, INPUT_W = 640, 640
RANDOM_CASES = 1500


def _random_image(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    shape = (height, width) if channels == 0 else (height, width, channels)
    kind = rng.integers(3)
    if kind == 0:  # noise: every pixel's rounding differs
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == 1:  # black and white: the largest differences between neighbours
        return rng.choice(np.array([0, 255], np.uint8), shape)
    return rng.integers(250, 256, shape, dtype=np.uint8)  # near saturation: overflow would show


def _assert_like_cv2(image: np.ndarray, width: int, height: int) -> None:
    expected = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    got = resize_linear(image, width, height)
    assert got.shape[:2] == (height, width)
    # cv2 drops the axis of a HxWx1 image; resize_linear keeps the input's rank.
    diff = np.abs(got.reshape(expected.shape).astype(int) - expected)
    assert diff.max() == 0, f"{image.shape} -> {width}x{height}: {(diff > 0).sum()} pixels differ, max {diff.max()}"


def test_resize_linear_equals_opencv_on_random_sizes():
    rng = np.random.default_rng(2024)
    for _ in range(RANDOM_CASES):
        src_w, src_h = (int(v) for v in rng.integers(1, 160, 2))
        if rng.random() < 0.3:  # unrelated sizes: different scales per axis
            width, height = (int(v) for v in rng.integers(1, 320, 2))
        else:  # one scale, as a letterbox does
            ratio = rng.uniform(0.05, 4)
            width, height = max(1, round(src_w * ratio)), max(1, round(src_h * ratio))
        _assert_like_cv2(_random_image(rng, src_h, src_w, int(rng.choice([0, 1, 2, 3, 4]))), width, height)


@pytest.mark.parametrize("channels", [0, 1, 2, 3, 4])
def test_resize_linear_equals_opencv_on_special_scales(channels):
    """Exact halving (OpenCV switches to its 2x2 box average), other integer factors, one
    axis unchanged, 1-pixel sides, and camera sizes to and from 640."""
    rng = np.random.default_rng(channels)
    for src_w, src_h in [(1, 1), (1, 9), (9, 1), (2, 2), (4, 6), (101, 77), (640, 480), (1280, 960), (1920, 1080)]:
        image = _random_image(rng, src_h, src_w, channels)
        targets = [(src_w // 2, src_h // 2), (src_w // 3, src_h // 3), (src_w * 2, src_h * 2), (src_w * 3, src_h * 3),
                   (src_w, max(1, src_h // 2)), (max(1, src_w // 2), src_h), (640, round(640 * src_h / src_w)),
                   (round(640 * src_w / src_h), 640), (1, 1), (src_w, 1), (1, src_h), (src_w + 1, src_h + 1)]
        for width, height in targets:
            if width >= 1 and height >= 1 and width * height <= 4_000_000:
                _assert_like_cv2(image, width, height)


def _photos(tmp_path: Path) -> list[Path]:
    """Real photos at odd sizes and aspect ratios as PNG files: shrunk, enlarged, kept, tall, wide."""
    import skimage.data
    from PIL import Image

    crops = [(skimage.data.chelsea(), (0, 0, 451, 300)), (skimage.data.coffee(), (13, 7, 600, 400)),
             (skimage.data.astronaut(), (31, 5, 482, 512)), (skimage.data.rocket(), (100, 40, 327, 427)),
             (skimage.data.astronaut(), (0, 0, 512, 512)), (skimage.data.coffee(), (1, 101, 600, 170)),
             (skimage.data.chelsea(), (200, 17, 233, 290)), (skimage.data.camera(), (3, 3, 514 - 7, 512))]
    paths = []
    for i, (photo, (left, top, right, bottom)) in enumerate(crops):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(photo[top:bottom, left:right]).save(path)
        paths.append(path)
    big = Image.fromarray(skimage.data.coffee()).resize((1280, 853), Image.Resampling.BICUBIC)  # exactly 2x wide
    big.save(tmp_path / "big.png")
    exact = Image.fromarray(skimage.data.chelsea()[:240, :320]).resize((1280, 960))  # halved: 640x480, 80 px borders
    exact.save(tmp_path / "exact.png")
    shrunk = Image.fromarray(skimage.data.astronaut()).resize((997, 661), Image.Resampling.BICUBIC)  # x 0.642
    shrunk.save(tmp_path / "shrunk.png")
    Image.fromarray(skimage.data.astronaut()).resize((640, 480)).save(tmp_path / "kept.png")  # fits: no resize
    odd = {"one_pixel": Image.fromarray(skimage.data.chelsea()[100:101, 200:201]),
           "huge": Image.fromarray(skimage.data.coffee()).resize((4000, 3000), Image.Resampling.BICUBIC),
           "camera": Image.fromarray(skimage.data.coffee()).resize((960, 720), Image.Resampling.BICUBIC),
           "odd_width": Image.fromarray(skimage.data.rocket()[:479, :641]),
           "grey": Image.fromarray(skimage.data.camera()[:333, :497]),
           "palette": Image.fromarray(skimage.data.astronaut()[:301, :451]).convert("P",
                                                                                    palette=Image.Palette.ADAPTIVE)}
    for name, image in odd.items():
        image.save(tmp_path / f"{name}.png", compress_level=1)  # the 12 MP one: fast to write
    rgba = Image.fromarray(skimage.data.chelsea()[:299, :450]).convert("RGBA")  # both readers drop the alpha
    rgba.putalpha(Image.fromarray((np.arange(299 * 450) % 251).reshape(299, 450).astype(np.uint8)))
    rgba.save(tmp_path / "rgba.png")
    return [*paths, *(tmp_path / f"{name}.png" for name in ("big", "exact", "shrunk", "kept", "rgba", *odd))]


ULTRALYTICS_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.patches import imread

    out, height, width, *paths = sys.argv[1:]
    box = LetterBox(new_shape=(int(height), int(width)), auto=False, scale_fill=False, scaleup=True, center=True,
                    stride=32)
    tensors = {}
    for i, path in enumerate(paths):
        image = box(image=imread(path))  # BGR, as Ultralytics' predictor loads it
        # BasePredictor.preprocess: BGR to RGB, BHWC to BCHW, float, / 255.
        im = np.stack([image])[..., ::-1].transpose((0, 3, 1, 2))
        im = torch.from_numpy(np.ascontiguousarray(im)).float()
        im /= 255
        tensors[str(i)] = im.numpy()
    np.savez(out, **tensors)
""")


def _ultralytics_tensors(paths: list[Path], tmp_path: Path) -> list[np.ndarray]:
    out = tmp_path / "ultralytics.npz"
    done = run_with_ultralytics(ULTRALYTICS_SCRIPT, out, INPUT_H, INPUT_W, *paths)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(out) as data:
        return [data[str(i)] for i in range(len(paths))]


def _letterbox_pipeline() -> ImagePipeline:
    steps = ImageSteps(input="images", resize=(INPUT_H, INPUT_W), letterbox=True, pad_value=114)
    return ImagePipeline(steps, TensorSpec("images", (1, 3, INPUT_H, INPUT_W), "float32"))


@pytest.fixture(params=["opencv", "numpy"])
def resize_with(request, monkeypatch):
    """Each letterbox test runs through OpenCV (installed here) and through the numpy
    re-implementation a device without OpenCV runs."""
    if request.param == "numpy":
        monkeypatch.setattr(letterbox_module, "_opencv", lambda: None)
    assert resize_backend().split()[0] == request.param
    return request.param


def test_letterbox_tensor_equals_ultralytics(tmp_path, resize_with):
    paths = _photos(tmp_path)
    expected = _ultralytics_tensors(paths, tmp_path)
    pipeline = _letterbox_pipeline()
    for path, reference in zip(paths, expected, strict=True):
        tensor, geometry = pipeline.prepare(path)
        assert tensor.shape == reference.shape == (1, 3, INPUT_H, INPUT_W)
        assert np.array_equal(tensor, reference), path.name  # max |diff| 0
        assert np.array_equal(pipeline(path), tensor)  # __call__ is prepare's tensor
    # A camera frame in OpenCV's order letterboxes the same as its file.
    frame = cv2.imread(str(paths[1]))
    assert np.array_equal(pipeline(frame, channels="bgr"), pipeline(paths[1]))


ODD_SIZES = [(1, 1), (1, 5000), (5000, 1), (3000, 4000), (720, 960), (479, 641), (7, 3), (2, 1281)]


@pytest.mark.parametrize("channels", [0, 1, 2, 3, 4])
def test_resize_through_opencv_equals_numpy_on_odd_sizes(channels, monkeypatch):
    """`resize` (OpenCV here) and `resize_linear` (numpy) agree pixel for pixel, keep the
    input's rank, and `resize` takes the numpy path when OpenCV cannot be imported."""
    rng = np.random.default_rng(channels)
    for height, width in ODD_SIZES:
        image = _random_image(rng, height, width, channels)
        for out_w, out_h in [(640, 480), (1, 1), (width + 1, 3), (max(1, width // 7), max(1, height // 5))]:
            numpy_pixels = resize_linear(image, out_w, out_h)
            assert numpy_pixels.shape == (out_h, out_w) + image.shape[2:]
            assert np.array_equal(resize(image, out_w, out_h), numpy_pixels), (image.shape, out_w, out_h)
    monkeypatch.setattr(letterbox_module, "_opencv", lambda: None)
    assert resize_backend() == "numpy"
    assert np.array_equal(resize(image, 33, 17), resize_linear(image, 33, 17))


def test_resize_plans_are_computed_once_per_size():
    letterbox_module._plan.cache_clear()
    image = np.random.default_rng(1).integers(0, 256, (301, 451, 3), dtype=np.uint8)
    first = resize_linear(image, 640, 427)
    assert np.array_equal(resize_linear(image.copy(), 640, 427), first)
    info = letterbox_module._plan.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    plan = letterbox_module._plan(451, 301, 640, 427, 3)
    assert not plan.left.flags.writeable and not plan.strips[0].top.flags.writeable  # shared across threads


@pytest.mark.parametrize("height, width", ODD_SIZES)
def test_letterbox_on_odd_sizes(height, width, resize_with):
    """Grey and colour images at odd sizes letterbox as Ultralytics does (cv2.resize, then
    cv2.copyMakeBorder with 114); one that would keep no pixel on a side is refused."""
    rng = np.random.default_rng(height * width)
    for channels in (0, 3):
        image = _random_image(rng, height, width, channels)
        if min(height, width) * INPUT_W / max(height, width) < 0.5:  # round() to 0 pixels: cv2.resize fails
            with pytest.raises(InputError, match="keeps no pixel"):
                letterbox(image, INPUT_H, INPUT_W)
            continue
        out, geometry = letterbox(image, INPUT_H, INPUT_W)
        new_w, new_h = round(width * geometry.scale_x), round(height * geometry.scale_y)
        expected = image if (new_w, new_h) == (width, height) else cv2.resize(image, (new_w, new_h))
        bottom, right = INPUT_H - new_h - geometry.pad_top, INPUT_W - new_w - geometry.pad_left
        expected = cv2.copyMakeBorder(expected, geometry.pad_top, bottom, geometry.pad_left, right,
                                      cv2.BORDER_CONSTANT, value=(114, 114, 114))
        assert np.array_equal(out, expected), (height, width, channels)


def test_letterbox_arithmetic_and_borders():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out, geometry = letterbox(image, 640, 640, pad_value=7)
    assert out.shape == (640, 640, 3) and np.array_equal(out[80:560], image)  # 640x480 fits: no resize, 80 px bars
    assert (out[:80] == 7).all() and (out[560:] == 7).all()
    assert geometry == Geometry(scale_x=1.0, scale_y=1.0, pad_left=0, pad_top=80, width=640, height=480)
    # 301 rows into 640: 640 - 301*640/451 = 212.9 -> scaled height 427, pads 106 (top) and 107.
    out, geometry = letterbox(rng.integers(0, 256, (301, 451), dtype=np.uint8), 640, 640)
    assert out.shape == (640, 640) and geometry.pad_top == 106 and (out[:106] == 114).all()
    assert (out[106 + 427:] == 114).all() and (out[106:106 + 427] != 114).any()


def test_geometry_maps_boxes_back_to_the_original(tmp_path):
    rng = np.random.default_rng(3)
    for height, width in [(300, 451), (853, 1280), (480, 640), (512, 201), (33, 700)]:
        _, geometry = letterbox(np.zeros((height, width, 3), np.uint8), INPUT_H, INPUT_W)
        xy = rng.uniform(0, [width, height], (50, 2)).astype(np.float32)
        wh = rng.uniform(0, [width, height], (50, 2)).astype(np.float32)
        boxes = np.concatenate([xy, np.minimum(xy + wh, [width, height])], axis=1).astype(np.float32)
        back = geometry.to_original(geometry.to_input(boxes))
        assert back.dtype == np.float32 and np.abs(back - boxes).max() <= 1e-3 * max(width, height)
    # Boxes reaching into the grey borders are clipped to the image.
    _, geometry = letterbox(np.zeros((480, 640, 3), np.uint8), INPUT_H, INPUT_W)
    assert geometry.to_original(np.array([[-5.0, 10.0, 700.0, 600.0]])).tolist() == [[0.0, 0.0, 640.0, 480.0]]


def test_geometry_of_resize_and_centre_crop():
    """The torchvision pipeline's Geometry: a box drawn on the crop lands where the same
    pixels are in the original."""
    from PIL import Image

    steps = ImageSteps(input="x", resize=(256,), crop=(224, 224))
    pipeline = ImagePipeline(steps, TensorSpec("x", (1, 3, 224, 224), "float32"))
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:200, 150:250] = 255  # a white square
    tensor, geometry = pipeline.prepare(Image.fromarray(image))
    # 400x300 -> 341x256 (torchvision truncates), crop offset round(117/2) = 58 (half to even), 16.
    assert (geometry.scale_x, geometry.scale_y) == (341 / 400, 256 / 300)
    assert (geometry.pad_left, geometry.pad_top) == (-58, -16)
    white = np.argwhere(tensor[0, 0] > 0.5)
    found = [white[:, 1].min(), white[:, 0].min(), white[:, 1].max() + 1, white[:, 0].max() + 1]
    back = geometry.to_original(np.array([found], np.float32))[0]
    assert np.abs(back - [150, 100, 250, 200]).max() <= 1.5  # bilinear spreads the edge by a pixel
