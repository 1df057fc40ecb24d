"""Ultralytics detection checkpoints (`best.pt`) as a build's model source.

`edgepack build best.pt` needs no factory, input spec, preprocessing or labels: an
Ultralytics checkpoint carries its network, its training image size (`imgsz`), its class
names and the NMS settings its predictor applies. The network is put in the state
Ultralytics' own ONNX exporter puts it in (eval, float, Conv+BN fused, the Detect head's
`export` flag, C2f's split forward), so its one output is the raw head
[1, 4 + classes, anchors]: box centre x, y, width, height in input pixels, then each
class's sigmoid score. That is the manifest's "yolo" detection layout.

Ultralytics is optional and heavy (scripts/setup-ultralytics.sh installs it into
.venv/ultralytics, used with PYTHONPATH); nothing here imports it until a .pt is loaded.
"""

from __future__ import annotations

import copy
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import ModelSourceError

if TYPE_CHECKING:  # (ultralytics is imported where it is used: a checkpoint build needs it)
    from ultralytics.nn.tasks import DetectionModel

__all__ = ["UltralyticsCheckpoint", "load_checkpoint", "export_mode", "is_checkpoint_path", "INPUT_NAME"]

INPUT_NAME = "images"  # the input name Ultralytics' exporter gives its models
CHECKPOINT_SUFFIX = ".pt"
INSTALL_HINT = ("install it next to this environment: scripts/setup-ultralytics.sh, then run with "
                "PYTHONPATH=.venv/ultralytics (or pip install ultralytics)")
# What `YOLO(best.pt).predict()` applies when the caller passes nothing: Model.predict's own
# conf default (checkpoints store conf=None), and the configuration's iou and max_det,
# which the checkpoint's train_args override when they set them.
PREDICT_CONF = 0.25
DEFAULT_IOU = 0.7
DEFAULT_MAX_DET = 300


@dataclass(frozen=True)
class UltralyticsCheckpoint:
    """A loaded detection checkpoint: `module` in export mode returns [1, 4 + classes,
    anchors] for an `images` input of `input_shape` (1, 3, H, W); `names` are the class
    names in class order; the thresholds are those Ultralytics' predictor uses."""

    module: torch.nn.Module
    input_shape: tuple[int, int, int, int]
    names: tuple[str, ...]
    score_threshold: float
    iou_threshold: float
    max_detections: int
    version: str  # the Ultralytics version that wrote the checkpoint

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """`{"images": zeros(input_shape)}`, the shape the build exports at."""
        return {INPUT_NAME: torch.zeros(self.input_shape)}


def is_checkpoint_path(source: str) -> bool:
    """Whether a MODEL argument names a checkpoint file rather than FILE.py:FACTORY."""
    return source.lower().endswith(CHECKPOINT_SUFFIX)


def _ultralytics():
    try:
        import ultralytics  # noqa: F401
        from ultralytics.nn import tasks
    except ImportError as exc:
        raise ModelSourceError(f"{exc.name or 'ultralytics'} is not importable, so an Ultralytics checkpoint "
                               f"cannot be loaded; {INSTALL_HINT}") from exc
    return tasks


def load_checkpoint(path: Path | str) -> UltralyticsCheckpoint:
    """Load an Ultralytics detection checkpoint from `path` (ModelSourceError when
    ultralytics is missing or the file is not one)."""
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"model file {path} does not exist; give an Ultralytics checkpoint (best.pt) "
                               "or FILE.py:FACTORY")
    tasks = _ultralytics()
    # Ultralytics checkpoints are full pickles (the network's classes): loading one runs
    # code from the file, as `YOLO(path)` does; the user named this file as the model.
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ModuleNotFoundError,
            AttributeError) as exc:
        raise ModelSourceError(f"{path} is not an Ultralytics checkpoint that this ultralytics "
                               f"({_version()}) can read ({type(exc).__name__}: {exc}); export best.pt with "
                               "Ultralytics, or give FILE.py:FACTORY") from None
    model = checkpoint.get("ema") or checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model, tasks.BaseModel):
        raise ModelSourceError(f"{path} is not an Ultralytics checkpoint (no 'model' or 'ema' network in it); "
                               "give a best.pt written by Ultralytics training, or FILE.py:FACTORY")
    # Subclasses (segmentation, pose, OBB, world) add outputs the "yolo" layout has no room for.
    if type(model) is not tasks.DetectionModel:
        raise ModelSourceError(f"{path} holds an Ultralytics {type(model).__name__}; only detection "
                               "checkpoints (task=detect) can be built from a .pt; give FILE.py:FACTORY for others")
    args = {**(checkpoint.get("train_args") or {})}
    size = args.get("imgsz", 640)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    channels = int(getattr(model, "yaml", {}).get("channels", 3))
    return UltralyticsCheckpoint(
        module=export_mode(model),
        input_shape=(1, channels, int(height), int(width)),
        names=tuple(str(names[i]) for i in range(len(names))),
        score_threshold=float(args.get("conf") or PREDICT_CONF),
        iou_threshold=float(args.get("iou") or DEFAULT_IOU),
        max_detections=int(args.get("max_det") or DEFAULT_MAX_DET),
        version=str(checkpoint.get("version", "unknown")),
    )


def export_mode(model: DetectionModel) -> torch.nn.Module:
    """A copy of an Ultralytics detection network as its ONNX exporter prepares it
    (engine/exporter.py): float, eval, Conv+BN fused, fixed-shape Detect head in export
    mode (one tensor out, no NMS), C2f with its split forward (a cleaner graph)."""
    from ultralytics.nn.modules import C2f, Detect

    model = copy.deepcopy(model).float().eval()
    for parameter in model.parameters():
        parameter.requires_grad = False
    model = model.fuse(verbose=False) if _accepts_verbose(model.fuse) else model.fuse()
    for m in model.modules():
        if isinstance(m, Detect):
            m.dynamic, m.export, m.format, m.xyxy = False, True, "onnx", False
        elif isinstance(m, C2f):
            m.forward = m.forward_split
    return model


def _accepts_verbose(method: Any) -> bool:
    import inspect

    return "verbose" in inspect.signature(method).parameters


def _version() -> str:
    try:
        import ultralytics

        return ultralytics.__version__
    except ImportError:
        return "not installed"
