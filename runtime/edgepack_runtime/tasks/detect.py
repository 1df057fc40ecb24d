"""detect: a "yolo" detector's head ([1, 4 + classes, anchors]: cx, cy, w, h in input
pixels, then class scores in 0..1), judged after decoding and NMS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..detection import MAP_SCORE_THRESHOLD, detect, f1_score, map50, match
from ..errors import BundleError
from ..intervals import group_bootstrap, group_index, ratio_interval
from ..manifest import DetectionSettings, Postprocessing, TaskMetric, TensorSpec
from ..task_fidelity import Floors, group_count
from .base import Ask, Outputs, Task

if TYPE_CHECKING:
    from ..postprocess import Detection, Prediction

BOX_ROWS = 4  # "yolo": cx, cy, w, h, then one row per class
NEAR_THRESHOLD = 0.5  # anchors whose best score reaches this share of the threshold can cross it


def _settings(post: Optional[Postprocessing]) -> DetectionSettings:
    return post.detection if post is not None and post.detection is not None else DetectionSettings()


def _xyxy(rows: np.ndarray) -> np.ndarray:
    cx, cy, w, h = rows
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired boxes, [4, K] each (x1y1x2y2)."""
    inter = (np.clip(np.minimum(a[2], b[2]) - np.maximum(a[0], b[0]), 0, None)
             * np.clip(np.minimum(a[3], b[3]) - np.maximum(a[1], b[1]), 0, None))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou: np.ndarray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return iou


def _rows(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), values.shape[-2], values.shape[-1])  # [N, 4 + classes, anchors]


class Detect(Task):
    """F1 of the artifact's detections after decoding and NMS against PyTorch's (IoU 0.5,
    same class; the floor) and mAP50 with PyTorch's detections as ground truth. Candidates
    are ranked by the class-score error of the anchors near or above the score threshold,
    in units of the threshold (a box that crosses it appears or disappears), plus 1 - IoU
    of the boxes PyTorch keeps."""

    name = "detect"
    answer_kind = "detections"
    decode_tail_float = True
    draws = True
    settings_field = "detection"
    help = "a YOLO head [1, 4 + classes, anchors]: judged by detection F1 after NMS"

    def floor(self, metric: str, floors: Floors) -> Optional[float]:
        return floors.min_f1 if metric == "f1" else None

    def metrics(self, outputs: Outputs, reference: Outputs, floors: Floors, post: Optional[Postprocessing] = None,
                groups: Optional[np.ndarray] = None) -> tuple[TaskMetric, ...]:
        main, settings = self.main(post, reference), _settings(post)
        expected = [detect(r, settings) for r in reference[main]]
        found = [detect(o, settings) for o in outputs[main]]
        ranked = [detect(o, settings, score_threshold=MAP_SCORE_THRESHOLD) for o in outputs[main]]
        n = len(expected)
        # F1 = 2TP / (2TP + FP + FN) pooled over images: a ratio whose unit is the group of images
        tp = np.array([match(f, r).sum() for f, r in zip(found, expected)], np.float64)
        trials = np.array([len(f) + len(r) for f, r in zip(found, expected)], np.float64)  # 2TP + FP + FN
        index = group_index(groups, n)
        low, high = ratio_interval(np.bincount(index, weights=2 * tp), np.bincount(index, weights=trials))
        hits = [match(f, r) for f, r in zip(ranked, expected)]  # once: the bootstrap below resamples these images

        def mean_ap(pick: np.ndarray) -> float:
            return map50([ranked[i] for i in pick], [expected[i] for i in pick], [hits[i] for i in pick])

        units = group_count(groups, n)
        return (
            TaskMetric("f1", f1_score(found, expected)[0], low, high, samples=n, floor=self.floor("f1", floors),
                       groups=units),
            TaskMetric("map50", mean_ap(np.arange(n)), *group_bootstrap(mean_ap, groups, n), samples=n, groups=units),
        )

    def sample_errors(self, outputs: Outputs, reference: Outputs, post: Optional[Postprocessing] = None
                      ) -> np.ndarray:
        main, threshold = self.main(post, reference), _settings(post).score_threshold
        errors = []
        for o, r in zip(_rows(outputs[main]).astype(np.float64), _rows(reference[main]).astype(np.float64),
                        strict=True):
            ref_best, out_best = r[BOX_ROWS:].max(axis=0), o[BOX_ROWS:].max(axis=0)
            near = (ref_best >= threshold * NEAR_THRESHOLD) | (out_best >= threshold * NEAR_THRESHOLD)
            gap = np.abs(o[BOX_ROWS:, near] - r[BOX_ROWS:, near]).max(axis=0) / threshold
            score = gap.mean() if near.any() else 0
            kept = ref_best >= threshold
            box = (1 - _paired_iou(_xyxy(o[:BOX_ROWS, kept]), _xyxy(r[:BOX_ROWS, kept]))).mean() if kept.any() else 0
            errors.append(score + box)
        return np.array(errors, np.float64)

    def comparable(self, outputs: Outputs, reference: Outputs, post: Optional[Postprocessing] = None
                   ) -> dict[str, np.ndarray]:
        """`outputs` with the box rows of every anchor the reference keeps no detection for set
        to the reference's: a detector's background anchors have no box to speak of (their box
        distribution is flat, int8 moves its mean by hundreds of pixels), and the parity check
        of a detector compares what can become a detection: every score, and the boxes of
        anchors whose best score reaches the threshold."""
        main, settings = self.main(post, reference), _settings(post)
        out, ref = np.array(outputs[main], copy=True), reference[main]
        rows, ref_rows = _rows(out), _rows(ref)
        background = ref_rows[:, BOX_ROWS:].max(axis=1) < settings.score_threshold  # [N, anchors]
        for i in range(len(rows)):
            rows[i, :BOX_ROWS, background[i]] = ref_rows[i, :BOX_ROWS, background[i]]
        return {**outputs, main: rows.reshape(out.shape)}

    def output_problem(self, outputs: Sequence[TensorSpec]) -> Optional[str]:
        output = outputs[0]
        if len(outputs) == 1 and len(output.shape) == 3 and output.shape[0] == 1 and output.shape[1] > BOX_ROWS:
            return None
        shapes = ", ".join(str(list(s.shape)) for s in outputs)
        return (f"--task detect needs one output [1, 4 + classes, anchors] (Ultralytics' exported head: boxes cx, "
                f"cy, w, h in pixels, then class scores); this model returns {shapes}; put the head in export mode "
                "or pick another --task")

    def label_count(self, output: TensorSpec) -> int:
        return int(output.shape[1]) - BOX_ROWS  # a detector's classes are its rows after the box

    def answer(self, post: Postprocessing, outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
               ask: Ask) -> "Prediction":
        from ..postprocess import Prediction

        if post.detection is None:  # the manifest's reader refuses detections without their settings
            raise BundleError("the bundle's postprocessing answers detections without detection settings; rebuild it")
        found = detect(outputs[post.output], post.detection, ask.score_threshold, ask.iou_threshold)
        boxes = found.boxes if ask.geometry is None or len(found) == 0 else ask.geometry.to_original(found.boxes)
        detections: list[Detection] = []
        for c, score, box in zip(found.classes.tolist(), found.scores, boxes):
            x1, y1, x2, y2 = (float(v) for v in box)
            detections.append((labels[c] if labels is not None else str(c), float(score), x1, y1, x2, y2))
        return Prediction(outputs=outputs, detections=detections)
