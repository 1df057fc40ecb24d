"""The ABD atom-and-bond detector (a YOLOv8n-sized Ultralytics 8.3 model, 147 classes,
640x640), from the `ABD-model` wheel's ABD.pt, in Ultralytics' export mode: one output
[1, 4 + 147, 8400], box centre x, y, width and height in input pixels, then each class's
sigmoid score (no NMS inside: the bundle's "detections" postprocessing does it).

Needs ultralytics and the wheel (scripts/setup-ultralytics.sh puts both in .venv/ultralytics):

    PYTHONPATH=.venv/ultralytics .venv/bin/python examples/yolo/prepare.py
    PYTHONPATH=.venv/ultralytics .venv/bin/edgepack build examples/yolo/model.py:create --target host \
        --calibration examples/yolo/artifacts/calib.npz --eval examples/yolo/artifacts/eval.npz \
        --preprocess yolo --postprocess detections --labels examples/yolo/artifacts/labels.txt -o dist/yolo-host

`edgepack build ABD.pt` reaches the same module with no other flags (edgepack/ultralytics_source.py).
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache
from pathlib import Path

import torch

from edgepack.ultralytics_source import INPUT_NAME, UltralyticsCheckpoint, load_checkpoint

IMAGE_SIZE = 640  # the checkpoint's training imgsz
CHECKPOINT_PACKAGE, CHECKPOINT_FILE = "ABD_model", "ABD.pt"


def checkpoint_path() -> Path:
    """ABD.pt inside the installed `ABD-model` wheel."""
    return Path(str(importlib.resources.files(CHECKPOINT_PACKAGE).joinpath(CHECKPOINT_FILE)))


@lru_cache(maxsize=1)
def checkpoint() -> UltralyticsCheckpoint:
    """The loaded checkpoint: export-mode module, class names, Ultralytics' thresholds."""
    return load_checkpoint(checkpoint_path())


def create() -> torch.nn.Module:
    return checkpoint().module


def example_inputs() -> dict:
    return {INPUT_NAME: torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)}
