"""A detector's raw output → boxes (detection.py): decoding and class-aware NMS against a
straightforward pure-Python reference, on random boxes and on hand-made overlaps, and
the cost of a realistic YOLOv8 output (measured and printed, not a wall-clock threshold)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgepack_runtime.detection import Detections, decode, detect, nms
from edgepack_runtime.manifest import DetectionSettings

SETTINGS = DetectionSettings()


def reference_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_detect(output, score_threshold, iou_threshold, max_detections):
    """The textbook algorithm, one anchor and one pair at a time: best class per anchor,
    keep ≥ threshold, then greedy NMS by score within each class."""
    values = np.asarray(output, np.float64)[0]
    candidates = []
    for a in range(values.shape[1]):
        scores = list(values[4:, a])
        c = scores.index(max(scores))
        if scores[c] >= score_threshold:
            cx, cy, w, h = (float(np.float32(v)) for v in values[:4, a])
            candidates.append((scores[c], c, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
    candidates.sort(key=lambda t: -t[0])  # stable: ties keep anchor order
    kept = []
    for score, c, box in candidates:
        if all(k[1] != c or reference_iou(k[2], box) <= iou_threshold for k in kept):
            kept.append((score, c, box))
            if len(kept) == max_detections:
                break
    return kept


def random_output(rng, anchors: int, classes: int, size: float = 100.0) -> np.ndarray:
    """Boxes crowded into a small image so many overlap, scores spread over 0..1."""
    out = np.empty((1, 4 + classes, anchors), np.float32)
    out[0, 0:2] = rng.uniform(0, size, (2, anchors))
    out[0, 2:4] = rng.uniform(2, size / 2, (2, anchors))
    out[0, 4:] = rng.uniform(0, 1, (classes, anchors)) ** 3
    return out


def assert_same(found: Detections, expected) -> None:
    assert len(found) == len(expected)
    assert found.classes.tolist() == [c for _, c, _ in expected]
    np.testing.assert_allclose(found.scores, [s for s, _, _ in expected], rtol=1e-6)
    np.testing.assert_allclose(found.boxes, np.array([b for _, _, b in expected]).reshape(-1, 4), atol=1e-3)


@pytest.mark.parametrize("seed", range(12))
def test_detect_equals_the_reference_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(1, 6))
    out = random_output(rng, int(rng.integers(20, 400)), classes)
    score, iou, cap = float(rng.uniform(0.05, 0.6)), float(rng.uniform(0.1, 0.8)), int(rng.integers(1, 80))
    expected = reference_detect(out, score, iou, cap)
    found = detect(out, SETTINGS, score_threshold=score, iou_threshold=iou, max_detections=cap)
    assert_same(found, expected)
    assert np.all(np.diff(found.scores) <= 0)  # best first
    # Without the cap, some seeds keep more than it allowed: the cap is what stopped them.
    uncapped = reference_detect(out, score, iou, 10**6)
    assert len(found) == min(cap, len(uncapped))


def test_without_a_batch_axis_and_with_settings_defaults():
    out = random_output(np.random.default_rng(99), 300, 3)
    assert_same(detect(out[0], SETTINGS), reference_detect(out, 0.25, 0.45, 300))
    assert_same(detect(out, SETTINGS), reference_detect(out, 0.25, 0.45, 300))


def one_output(boxes, classes, scores, n_classes=2) -> np.ndarray:
    """An output holding exactly these boxes (x1y1x2y2), each scoring `scores` in its class."""
    out = np.zeros((1, 4 + n_classes, len(boxes)), np.float32)
    for a, ((x1, y1, x2, y2), c, s) in enumerate(zip(boxes, classes, scores, strict=True)):
        out[0, :4, a] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        out[0, 4 + c, a] = s
    return out


def test_overlap_suppresses_within_a_class_never_across_classes():
    a, b = (0, 0, 10, 10), (1, 0, 11, 10)  # IoU 90/110 = 0.82
    same = detect(one_output([a, b], [0, 0], [0.9, 0.8]), SETTINGS)
    assert same.classes.tolist() == [0] and same.boxes[0].tolist() == list(a)
    across = detect(one_output([a, b], [0, 1], [0.9, 0.8]), SETTINGS)
    assert across.classes.tolist() == [0, 1] and len(across) == 2
    # A suppressed box suppresses nothing: b goes (by a), c overlaps only b and stays.
    c = (9, 0, 19, 10)  # IoU with b 2/18 = 0.11 > 0.1: b, were it kept, would drop c; a (IoU 1/19) does not
    chain = detect(one_output([a, b, c], [0, 0, 0], [0.9, 0.8, 0.7]), SETTINGS, iou_threshold=0.1)
    assert chain.boxes.tolist() == [list(map(float, a)), list(map(float, c))]


def test_thresholds_and_the_cap():
    a, b = (0, 0, 10, 10), (1, 0, 11, 10)
    out = one_output([a, b], [0, 0], [0.9, 0.3])
    assert len(detect(out, SETTINGS, iou_threshold=0.9)) == 2  # IoU 0.82 ≤ 0.9: both kept
    assert len(detect(out, SETTINGS, iou_threshold=0.81)) == 1
    assert len(detect(out, SETTINGS, score_threshold=0.5, iou_threshold=1.0)) == 1  # 0.3 is below
    assert len(detect(out, SETTINGS, score_threshold=0.3, iou_threshold=1.0)) == 2  # ≥: at the threshold counts
    assert detect(out, SETTINGS, iou_threshold=1.0, max_detections=1).scores.tolist() == [pytest.approx(0.9)]
    strict = DetectionSettings(score_threshold=0.95)
    nothing = detect(out, strict)
    assert len(nothing) == 0 and nothing.boxes.shape == (0, 4) and nothing.classes.dtype == np.int64


def test_degenerate_boxes_do_not_break_nms():
    out = one_output([(5, 5, 5, 5), (5, 5, 5, 5), (0, 0, 10, 10)], [0, 0, 0], [0.9, 0.8, 0.7], n_classes=1)
    found = detect(out, SETTINGS)  # zero-area boxes overlap nothing (IoU 0, not NaN)
    assert len(found) == 3


def realistic_yolo_output(seed: int = 0, anchors: int = 8400, classes: int = 80, objects: int = 12,
                          per_object: int = 30) -> np.ndarray:
    """A YOLOv8-sized output: low background scores (sigmoid of ~-7) and a dozen objects,
    each seen by ~30 anchors with jittered boxes: ~360 candidates over 0.25, as a real image."""
    rng = np.random.default_rng(seed)
    out = np.empty((4 + classes, anchors), np.float32)
    out[0:2] = rng.uniform(0, 640, (2, anchors))
    out[2:4] = rng.uniform(4, 200, (2, anchors))
    out[4:] = 1 / (1 + np.exp(-rng.normal(-7, 1.5, (classes, anchors))))
    chosen = rng.choice(anchors, objects * per_object, replace=False).reshape(objects, per_object)
    for seen in chosen:
        cx, cy, w, h = rng.uniform(50, 590, 2).tolist() + rng.uniform(20, 300, 2).tolist()
        out[0, seen] = cx + rng.normal(0, 4, per_object)
        out[1, seen] = cy + rng.normal(0, 4, per_object)
        out[2, seen] = w * rng.uniform(0.9, 1.1, per_object)
        out[3, seen] = h * rng.uniform(0.9, 1.1, per_object)
        out[4 + rng.integers(classes), seen] = rng.uniform(0.2, 0.95, per_object)
    return out[None]


def test_decode_and_nms_of_8400_anchors(capsys):
    """The issue's "≤ 2 ms on host": measured and printed (a shared CI machine makes a
    wall-clock assertion flaky); what is asserted is that the fast path is the reference."""
    out = realistic_yolo_output()
    found = detect(out, SETTINGS)
    assert_same(found, reference_detect(out, 0.25, 0.45, 300))
    candidates = len(decode(out, SETTINGS.score_threshold))
    timings = {"decode": [], "nms": [], "total": []}
    for _ in range(100):
        t0 = time.perf_counter()
        decoded = decode(out, SETTINGS.score_threshold)
        t1 = time.perf_counter()
        nms(decoded, SETTINGS.iou_threshold, SETTINGS.max_detections)
        t2 = time.perf_counter()
        timings["decode"].append(t1 - t0)
        timings["nms"].append(t2 - t1)
        timings["total"].append(t2 - t0)
    p50 = {name: float(np.median(t)) * 1e3 for name, t in timings.items()}
    with capsys.disabled():
        print(f"\ndecode + NMS, 8400 anchors x 80 classes, {candidates} candidates ≥ 0.25, {len(found)} kept: "
              f"p50 {p50['total']:.3f} ms (decode {p50['decode']:.3f}, NMS {p50['nms']:.3f})")
    assert 300 <= candidates <= 400 and 10 <= len(found) <= 100  # the realistic regime the figure is for
