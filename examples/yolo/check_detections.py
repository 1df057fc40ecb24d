"""Drawings in, boxes out, against PyTorch: for each eval drawing, PyTorch's detections
(the export-mode module on Ultralytics' letterbox, decoded and NMS'd by
edgepack_runtime.detection, boxes mapped back with Ultralytics' `scale_boxes`) against each
artifact's `predict(png)` (the bundle's own letterbox and postprocessing), as F1 at IoU 0.5
with the same class and mAP50 with PyTorch's detections as ground truth. Then Ultralytics'
own `YOLO(ABD.pt).predict(png, imgsz=640, conf=0.25, iou=0.45)` against PyTorch and the
fp32 artifact: with `rect=False` (the fixed 640x640 letterbox a bundle uses) and with
Ultralytics' default `rect=True` (a minimal rectangle, which a fixed-shape export cannot do).

Usage (after prepare.py and a build with --preprocess yolo --postprocess detections):
  PYTHONPATH=.venv/ultralytics .venv/bin/python examples/yolo/check_detections.py BUNDLE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

import edgepack_runtime
from edgepack_runtime.detection import MAP_SCORE_THRESHOLD, Detections, detect, f1_score, map50
from edgepack_runtime.manifest import DetectionSettings

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
sys.path.insert(0, str(HERE))
from model import IMAGE_SIZE, checkpoint, checkpoint_path  # noqa: E402
from prepare import letterbox  # noqa: E402

SCORE_THRESHOLD, IOU_THRESHOLD = 0.25, 0.45
MAX_DETECTIONS = 300


def pytorch_detections(module: torch.nn.Module, png: Path, score_threshold: float) -> Detections:
    """PyTorch's boxes for one drawing, in the drawing's pixels."""
    from ultralytics.utils.ops import scale_boxes

    with torch.no_grad():
        output = module(torch.from_numpy(letterbox(png))[None]).numpy()
    found = detect(output, DetectionSettings(score_threshold=score_threshold, iou_threshold=IOU_THRESHOLD,
                                             max_detections=MAX_DETECTIONS))
    height, width = cv2.imread(str(png)).shape[:2]
    boxes = scale_boxes((IMAGE_SIZE, IMAGE_SIZE), torch.from_numpy(found.boxes.copy()), (height, width)).numpy()
    return Detections(boxes.astype(np.float32), found.scores, found.classes)


def from_prediction(prediction, index: dict[str, int]) -> Detections:
    """A runtime Prediction's (label, score, x1, y1, x2, y2) list as Detections."""
    rows = prediction.detections or []
    if not rows:
        return Detections.empty()
    return Detections(np.asarray([r[2:] for r in rows], np.float32), np.asarray([r[1] for r in rows], np.float32),
                      np.asarray([index[r[0]] for r in rows], np.int64))


def ultralytics_detections(pngs: list[Path], rect: bool) -> list[Detections]:
    from ultralytics import YOLO

    yolo = YOLO(str(checkpoint_path()))
    out = []
    for png in pngs:
        boxes = yolo.predict(str(png), imgsz=IMAGE_SIZE, conf=SCORE_THRESHOLD, iou=IOU_THRESHOLD, rect=rect,
                             verbose=False)[0].boxes
        out.append(Detections(boxes.xyxy.numpy().astype(np.float32), boxes.conf.numpy().astype(np.float32),
                              boxes.cls.numpy().astype(np.int64)))
    return out


def line(name: str, found: list[Detections], reference: list[Detections], ranked: list[Detections]) -> str:
    f1, tp, fp, fn = f1_score(found, reference)
    return (f"{name:28s} {sum(map(len, found)):5d} boxes vs PyTorch's {sum(map(len, reference)):5d}; "
            f"F1 {f1:.4f} (tp {tp}, fp {fp}, fn {fn}); mAP50 {map50(ranked, reference):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    bundle = parser.parse_args().bundle
    pngs = sorted((ARTIFACTS / "eval").glob("*.png"))
    module = checkpoint().module
    index = {name: i for i, name in enumerate(checkpoint().names)}
    reference = [pytorch_detections(module, p, SCORE_THRESHOLD) for p in pngs]
    print(f"{len(pngs)} eval drawings; thresholds score {SCORE_THRESHOLD}, IoU {IOU_THRESHOLD}; "
          f"PyTorch finds {sum(map(len, reference))} boxes")
    ranked = [pytorch_detections(module, p, MAP_SCORE_THRESHOLD) for p in pngs]
    print(line("pytorch (self, sanity)", reference, reference, ranked))
    fp32 = None
    for art in edgepack_runtime.open_bundle(bundle).manifest.artifacts:
        if art.status != "ok":
            continue
        with edgepack_runtime.load(bundle, artifact=art.name) as model:
            found = [from_prediction(model.predict(p, score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD),
                                     index) for p in pngs]
            ranked_found = [from_prediction(model.predict(p, score_threshold=MAP_SCORE_THRESHOLD,
                                                          iou_threshold=IOU_THRESHOLD), index) for p in pngs]
        print(line(art.name, found, reference, ranked_found))
        if art.precision == "fp32" and fp32 is None:
            fp32 = (art.name, found)
    for rect in (False, True):
        theirs = ultralytics_detections(pngs, rect)
        print(line(f"ultralytics predict rect={rect}", theirs, reference, theirs) + "  (mAP over its conf≥0.25 boxes)")
        if fp32 is not None:
            f1, tp, fp, fn = f1_score(fp32[1], theirs)
            pairs = [_max_box_shift(a, b) for a, b in zip(fp32[1], theirs, strict=False)]
            print(f"  {fp32[0]} vs ultralytics rect={rect}: F1 {f1:.4f} (tp {tp}, fp {fp}, fn {fn}); "
                  f"largest box-corner shift among matched boxes {max(pairs, default=0.0):.3f} px")


def _max_box_shift(found: Detections, reference: Detections) -> float:
    """The largest corner difference (pixels) between boxes paired by same class and best IoU."""
    from edgepack_runtime.detection import iou_matrix

    if len(found) == 0 or len(reference) == 0:
        return 0.0
    overlap = iou_matrix(found.boxes, reference.boxes)
    overlap[found.classes[:, None] != reference.classes[None, :]] = 0.0
    best = overlap.argmax(axis=1)
    paired = overlap[np.arange(len(found)), best] >= 0.5
    if not paired.any():
        return 0.0
    return float(np.abs(found.boxes[paired] - reference.boxes[best[paired]]).max())


if __name__ == "__main__":
    main()
