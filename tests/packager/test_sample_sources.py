"""Sample sources beyond .npz: a folder of images (edgepack/samples.py) and an Ultralytics
checkpoint as MODEL (edgepack/model_source.py); the checkpoint tests need ultralytics
(scripts/setup-ultralytics.sh, PYTHONPATH=.venv/ultralytics) and skip without it."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from edgepack.errors import ModelSourceError
from edgepack.model_source import load_model
from edgepack.samples import load_samples
from edgepack_runtime.manifest import ImageSteps, TensorSpec

from ..conftest import run_with_ultralytics

SPEC = TensorSpec(name="image", shape=(1, 3, 8, 8), dtype="float32")
STEPS = ImageSteps(input="image", resize=(8, 8), scale=1 / 255)


def _write_images(folder, count=3):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8) for _ in range(count)]
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    return arrays


def test_folder_of_images_goes_through_the_declared_steps(tmp_path):
    arrays = _write_images(tmp_path)
    samples, labels, groups = load_samples(tmp_path, [SPEC], evaluation=True, image_steps=STEPS)
    assert labels is None and groups is None  # each image its own group
    got = samples["image"]
    assert got.shape == (3, 1, 3, 8, 8)
    expected = np.stack([a.transpose(2, 0, 1)[None] for a in arrays]).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("steps, message", [(STEPS, "holds no images"), (None, "pass --preprocess")])
def test_folder_errors_say_the_fix(tmp_path, steps, message):
    if steps is None:
        _write_images(tmp_path)
    with pytest.raises(ModelSourceError, match=message):
        load_samples(tmp_path, [SPEC], image_steps=steps)


def test_a_pt_that_is_not_an_ultralytics_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    done = run_with_ultralytics(
        "import sys\nfrom edgepack.model_source import load_model\nload_model(sys.argv[1])", path)
    assert done.returncode != 0 and "not an Ultralytics checkpoint" in done.stderr, done.stderr[-2000:]


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is importable here")
def test_a_checkpoint_without_ultralytics_says_how_to_install(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ModelSourceError, match="setup-ultralytics.sh"):
        load_model(str(path))


CHECKPOINT_DEFAULTS = """
import json
from importlib.resources import files
import torch
import ABD_model
from edgepack.model_source import load_model

loaded = load_model(str(files(ABD_model).joinpath("ABD.pt")))
with torch.no_grad():
    out = loaded.module(torch.zeros(1, 3, 640, 640))
print(json.dumps({"inputs": [[s.name, list(s.shape)] for s in loaded.inputs],
                  "defaults": [loaded.defaults.preprocess, loaded.defaults.postprocess],
                  "labels": list(loaded.defaults.labels), "shape": list(out.shape),
                  "scores": [float(out[:, 4:].min()), float(out[:, 4:].max())]}))
"""


def test_an_ultralytics_checkpoint_declares_its_defaults():
    done = run_with_ultralytics(CHECKPOINT_DEFAULTS)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["inputs"] == [["images", [1, 3, 640, 640]]]
    assert found["defaults"] == ["yolo", "detections"]
    assert len(found["labels"]) == 147 and found["labels"][0] == "Atom"
    assert found["shape"] == [1, 4 + 147, 8400]
    assert 0.0 <= found["scores"][0] and found["scores"][1] <= 1.0
