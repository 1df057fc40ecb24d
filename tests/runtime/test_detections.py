"""A bundle that answers with detections, end to end: the tiny YOLO-shaped detector built
with --preprocess yolo --postprocess detections, then predict() (boxes in the original
image's pixels), thresholds, the CLI's table and --annotate, the server's JSON and the
bench's postprocess figures."""

from __future__ import annotations

import json
import subprocess
import urllib.parse

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime import InputError
from edgepack_runtime.bench import postprocess_cost

from ..conftest import DETECTOR_LABELS, detector_scene
from .test_serve import CLI, Server

RED, BLUE = (32, 16, 64, 48), (80, 48, 112, 80)  # detector_scene()'s rectangles, original pixels


def union(boxes) -> list[float]:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return [boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()]


def by_label(detections) -> dict[str, list]:
    found: dict[str, list] = {}
    for label, _score, *box in detections:
        found.setdefault(label, []).append(box)
    return found


def scene_png(path, **kw):
    from PIL import Image

    Image.fromarray(detector_scene(**kw)).save(path)
    return path


def test_predict_answers_with_boxes_in_the_original_image(detector_bundle):
    with edgepack_runtime.load(detector_bundle) as model:
        manifest = model.bundle.manifest
        assert manifest.postprocessing.kind == "detections" and manifest.preprocessing.image.letterbox
        prediction = model.predict(detector_scene())
        tensor, geometry = model.prepare(detector_scene())
    # The letterbox halved 128x96 to 64x48 between 8-pixel borders: each rectangle is 2x2 cells.
    assert (geometry.scale_x, geometry.pad_top) == (0.5, 8)
    found = by_label(prediction.detections)
    assert sorted(found) == sorted(DETECTOR_LABELS) and all(len(boxes) == 4 for boxes in found.values())
    # Mapped back, the cells cover exactly the rectangles drawn in the 128x96 photo.
    assert union(found["red"]) == pytest.approx(RED, abs=1e-3)
    assert union(found["blue"]) == pytest.approx(BLUE, abs=1e-3)
    scores = [score for _, score, *_ in prediction.detections]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.99
    assert prediction.postprocess_ms > 0 and prediction.inference_ms > 0 and prediction.top is None
    as_json = prediction.to_dict()
    assert as_json["detections"][0] == {"label": prediction.detections[0][0], "score": prediction.detections[0][1],
                                        "box": list(prediction.detections[0][2:])}
    assert "outputs" not in as_json and as_json["postprocess_ms"] >= 0
    json.dumps(as_json)  # plain floats and strings only


def test_thresholds_override_the_manifest_per_call(detector_bundle):
    # Half a cell of red (a 4-pixel strip in input pixels) scores sigmoid(0) = 0.5.
    half = detector_scene(red=(32, 16, 40, 48), blue=(0, 0, 0, 0))
    with edgepack_runtime.load(detector_bundle) as model:
        assert len(model.predict(half).detections) == 2  # 2 half cells at 0.5 ≥ 0.25
        assert model.predict(half, score_threshold=0.6).detections == []
        assert len(model.predict(half, score_threshold=0.5).detections) == 2
        # Every cell of the scene is one anchor, disjoint from the others: nothing to suppress,
        # whatever the IoU threshold, and the default answer is unchanged by the calls above.
        assert len(model.predict(detector_scene(), iou_threshold=0.0).detections) == 8
        for bad in (1.5, -0.1, float("nan"), "0.3", True):
            with pytest.raises(InputError, match="score_threshold must be a number from 0 to 1"):
                model.predict(half, score_threshold=bad)
        with pytest.raises(InputError, match="iou_threshold must be a number from 0 to 1"):
            model.predict(half, iou_threshold=2)


def test_a_classifier_refuses_detection_thresholds(digits_raw_bundle):
    with edgepack_runtime.load(digits_raw_bundle) as model:
        with pytest.raises(InputError, match="score_threshold applies to detectors; this bundle answers with classes"):
            model.predict(np.zeros((8, 8), np.uint8), score_threshold=0.5)


def test_run_prints_the_detections_and_annotates_the_photo(detector_bundle, tmp_path):
    from PIL import Image

    photo = scene_png(tmp_path / "scene.png")
    shown = subprocess.run([CLI, "run", detector_bundle, "--image", photo, "--annotate", tmp_path / "boxes.jpg"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "8 detection(s)" in shown.stdout and "red" in shown.stdout and "blue" in shown.stdout
    assert "32.0, 16.0, 48.0, 32.0" in shown.stdout  # the red rectangle's top-left cell, in the photo's pixels
    drawn = np.asarray(Image.open(tmp_path / "boxes.jpg").convert("RGB")).astype(int)
    original = detector_scene().astype(int)
    assert drawn.shape == original.shape
    changed = np.abs(drawn - original).sum(axis=2) > 60
    # The outlines run along the rectangles' edges; the grey far from them is untouched.
    assert changed[16:48, 31:34].mean() > 0.8 and changed[47:50, 80:112].mean() > 0.8
    assert not changed[88:, :20].any()
    as_json = json.loads(subprocess.run([CLI, "run", detector_bundle, "--image", photo, "--json", "--score-threshold",
                                         "0.999999"], capture_output=True, text=True, check=True).stdout)
    assert as_json["detections"] == [] and as_json["artifact"] == "onnx-fp32"


@pytest.mark.parametrize("args, message", [
    (["--annotate", "{photo}"], "is the input image"),
    (["--annotate", "{tmp}/missing/out.jpg"], "does not exist"),
    (["--annotate", "{tmp}/out.nope"], "no image format for suffix '.nope'"),
    (["--score-threshold", "1.5"], "1.5 is not in the range"),
])
def test_bad_annotate_paths_and_thresholds_are_one_line(detector_bundle, tmp_path, args, message):
    photo = scene_png(tmp_path / "scene.png")
    before = photo.read_bytes()
    args = [a.format(photo=photo, tmp=tmp_path) for a in args]
    bad = subprocess.run([CLI, "run", detector_bundle, "--image", photo, *args], capture_output=True, text=True)
    assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert photo.read_bytes() == before


def test_labels_from_the_bundle_are_escaped_in_the_table(detector_bundle, tmp_path):
    from rich.console import Console

    from edgepack_runtime.cli import _detections_table

    console = Console(record=True, width=120)
    console.print(_detections_table([("[bold red]evil[/]", 0.9, 1.0, 2.0, 3.0, 4.0)], "t"))
    assert "[bold red]evil[/]" in console.export_text()


def test_the_server_answers_uploads_with_detections(detector_bundle, tmp_path):
    photo = scene_png(tmp_path / "scene.png").read_bytes()
    server = Server(detector_bundle, tmp_path)
    try:
        def post(query=""):
            return server.request("POST", "/v1/predict" + query, photo, {"content-type": "image/png"})

        status, body, _ = post()
        assert status == 200, body
        answer = json.loads(body)
        assert len(answer["detections"]) == 8 and {d["label"] for d in answer["detections"]} == set(DETECTOR_LABELS)
        red = [d["box"] for d in answer["detections"] if d["label"] == "red"]
        assert union(red) == pytest.approx(RED, abs=1e-3)
        assert set(answer) >= {"artifact", "preprocess_ms", "inference_ms", "postprocess_ms", "detections"}
        status, body, _ = post("?score_threshold=0.999999&iou_threshold=0.3")
        assert status == 200 and json.loads(body)["detections"] == []
        for query, detail in (("?score_threshold=2", "score_threshold must be a number from 0 to 1"),
                              ("?iou_threshold=abc", "iou_threshold must be a number from 0 to 1, not 'abc'"),
                              ("?iou_threshold=nan", "iou_threshold must be a number from 0 to 1"),
                              ("?score_threshold=0.1&score_threshold=0.2", "given 2 times")):
            status, body, _ = post(query)
            assert status == 400 and detail in json.loads(body)["detail"], (query, body)
        # A tensor body answers with the raw outputs: thresholds do not apply there.
        tensor = np.zeros((1, 3, 64, 64), np.float32)
        status, body, _ = server.request("POST", "/v1/predict?" + urllib.parse.urlencode({"score_threshold": 0.5}),
                                         json.dumps({"inputs": {"image": tensor.tolist()}}).encode(),
                                         {"content-type": "application/json"})
        assert status == 400 and "image uploads" in json.loads(body)["detail"]
        # The published API says so.
        schema = json.loads(server.get("/openapi.json")[1])
        parameters = {p["name"]: p for p in schema["paths"]["/v1/predict"]["post"]["parameters"]}
        assert parameters["score_threshold"]["schema"] == {"type": "number", "minimum": 0, "maximum": 1,
                                                           "default": 0.25}
        assert parameters["iou_threshold"]["in"] == "query"
    finally:
        server.stop()


def test_bench_measures_decode_and_nms_on_the_golden_outputs(detector_bundle, digits_raw_bundle, capsys):
    bundle = edgepack_runtime.bundle.open_bundle(detector_bundle)
    figures = postprocess_cost(bundle, seconds=0.05)()
    with capsys.disabled():
        print(f"\ntiny detector postprocess: p50 {figures['latency_ms']['p50']:.4f} ms, {figures}")
    assert figures["output"] == bundle.manifest.postprocessing.output and figures["shape"] == [1, 6, 64]
    assert figures["runs"] >= 10 and figures["detections_mean"] > 0  # real detections in the golden outputs
    assert set(figures["steps_p50_ms"]) == {"decode", "nms"} and figures["latency_ms"]["p50"] > 0
    assert postprocess_cost(edgepack_runtime.bundle.open_bundle(digits_raw_bundle)) is None


def test_bench_names_the_letterbox_resize_that_ran(detector_bundle, digits_raw_bundle, monkeypatch):
    """Two implementations make the same letterbox at different speeds: the record says which."""
    from edgepack_runtime import letterbox as letterbox_module
    from edgepack_runtime.bench import preprocess_cost

    bundle = edgepack_runtime.bundle.open_bundle(detector_bundle)
    assert preprocess_cost(bundle, seconds=0.01)()["resize"].startswith("opencv ")  # the dev extra installs it
    monkeypatch.setattr(letterbox_module, "_opencv", lambda: None)
    assert preprocess_cost(bundle, seconds=0.01)()["resize"] == "numpy"
    assert "resize" not in preprocess_cost(edgepack_runtime.bundle.open_bundle(digits_raw_bundle), seconds=0.01)()
