"""Streams: Model.predict_many answers as a loop of predict calls, in order, with one worker or
several; errors name their item; telemetry and drift record each item once, in order; `run
--image DIR/` over a folder; bench's whole-call and frames-per-second figures."""

from __future__ import annotations

import json
import subprocess
import threading

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime import InferenceError, InputError
from edgepack_runtime.backends import open_session

from ..conftest import detector_scene, digit_pngs
from .test_serve import CLI


def same(a, b) -> bool:
    return (a.top == b.top and a.detections == b.detections and a.outputs.keys() == b.outputs.keys()
            and all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs))


def scenes() -> list[np.ndarray]:
    """Detector photos of different sizes and rectangles, so answers differ by position."""
    return [detector_scene(), detector_scene(96, 96, (8, 8, 40, 40), (48, 56, 88, 88)),
            detector_scene(160, 64, (0, 0, 48, 32), (100, 20, 150, 60)), detector_scene(red=(0, 0, 0, 0)),
            detector_scene(64, 64, (0, 0, 8, 8), (8, 8, 64, 64)), detector_scene(blue=(0, 0, 0, 0))]


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("prefetch", [0, 1, 2, 5])
def test_predict_many_equals_a_loop_of_predict_in_order(digits_raw_bundle, digits_data, prefetch, workers):
    files, _, _ = digit_pngs(digits_data, 24)
    with edgepack_runtime.load(digits_raw_bundle, threads=3) as model:  # predict: one 3-thread session
        expected = [model.predict(png, top_k=3) for png in files]
        got = list(model.predict_many(iter(files), top_k=3, prefetch=prefetch, workers=workers))
    assert len({tuple(p.top) for p in expected}) > 5  # the answers differ: an order mix-up would show
    assert len(got) == len(expected) and all(same(a, b) for a, b in zip(got, expected, strict=True))
    assert all(p.preprocess_ms > 0 and p.inference_ms > 0 for p in got)


@pytest.mark.parametrize("workers", [1, 2])
def test_predict_many_maps_each_detectors_boxes_to_its_own_photo(detector_bundle, workers):
    photos = scenes() * 3
    with edgepack_runtime.load(detector_bundle, threads=2) as model:
        expected = [model.predict(p, score_threshold=0.3) for p in photos]
        got = list(model.predict_many(photos, score_threshold=0.3, workers=workers))
    assert len({len(p.detections) for p in expected}) > 1
    assert all(same(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("artifact", ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"])
def test_a_session_answers_the_same_at_any_thread_count(digits_bundle, artifact):
    """What workers rest on: a worker's 1-thread session computes the numbers of predict's
    2-thread one, bit for bit (the backends split outputs between threads, not sums)."""
    bundle = edgepack_runtime.open_bundle(digits_bundle)
    art, manifest = bundle.manifest.artifact(artifact), bundle.manifest
    inputs, _ = bundle.golden()
    outputs = []
    for threads in (1, 2, 3):
        session = open_session(art.format, bundle.verify_artifact(art), threads, manifest.inputs, manifest.outputs,
                               art.layout)
        outputs.append([session.run({"image": x})["output"] for x in inputs["image"][:16]])
    assert all(np.array_equal(a, b) for other in outputs[1:] for a, b in zip(outputs[0], other, strict=True))


class Recorded:
    """A telemetry writer and a drift monitor that keep what they are given, in order."""

    def __init__(self):
        self.records, self.observed = [], []

    def record(self, bundle, artifact, latency_ms, outcome):
        self.records.append((artifact, outcome, latency_ms))

    def record_drift(self, bundle, scores):
        pass

    def flush(self):
        pass

    def observe(self, inputs):
        self.observed.append(inputs["image"])

    def scores(self):
        return {}


@pytest.mark.parametrize("workers", [1, 2])
def test_telemetry_and_drift_record_each_answered_item_once_in_order(digits_raw_bundle, digits_data, tmp_path,
                                                                     workers):
    files, _, _ = digit_pngs(digits_data, 12)
    broken = tmp_path / "broken.png"
    broken.write_bytes(files[0][:40])
    with edgepack_runtime.load(digits_raw_bundle, threads=2) as model:
        tensors = [model.preprocess(png)["image"] for png in files]
        model.telemetry = model._drift = seen = Recorded()
        assert len(list(model.predict_many(files, workers=workers))) == len(files)
        assert [r[:2] for r in seen.records] == [("onnx-fp32", "ok")] * len(files)
        assert all(r[2] > 0 for r in seen.records)
        assert len(seen.observed) == len(files)
        assert all(np.array_equal(a, b) for a, b in zip(seen.observed, tensors, strict=True))
        # A stream stopped by item 5: the five before it recorded, nothing after it.
        seen.records.clear()
        with pytest.raises(InputError, match="^item 5: "):
            list(model.predict_many([*files[:5], str(broken), *files[5:]], workers=workers))
        assert len(seen.records) == 5


def test_predict_many_reads_the_stream_lazily_and_only_a_few_items_ahead(digits_raw_bundle, digits_data):
    files, _, _ = digit_pngs(digits_data, 4)
    read = []

    def camera():
        for i in range(1000):
            read.append(i)
            yield files[i % len(files)]

    with edgepack_runtime.load(digits_raw_bundle, threads=2) as model:
        for workers in (1, 2):
            read.clear()
            stream = model.predict_many(camera(), prefetch=2, workers=workers)
            for _ in range(5):
                next(stream)
            assert len(read) <= 5 + 2 + workers  # the items inferring and two ahead, never the whole stream
            stream.close()  # leaving early leaves no preparing or inferring thread behind
            assert not [t for t in threading.enumerate() if t.name.startswith(("edgepack-prepare", "edgepack-infer"))]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_names_its_item_after_the_good_ones_answered(digits_raw_bundle, digits_data, tmp_path, workers):
    files, _, _ = digit_pngs(digits_data, 3)
    broken = tmp_path / "broken.png"
    broken.write_bytes(files[0][:40])
    items = [files[0], files[1], str(broken), files[2]]
    answered = []
    with edgepack_runtime.load(digits_raw_bundle, threads=2) as model:
        with pytest.raises(InputError, match=r"^item 2: \S*broken\.png (cannot be decoded|is not an image)") as caught:
            for prediction in model.predict_many(items, workers=workers):
                answered.append(prediction)
        assert len(answered) == 2 and caught.value.item == 2
        with pytest.raises(InputError, match=r"^item 1 \(8 bytes\): the image is not an image"):
            list(model.predict_many([files[0], b"notimage"], prefetch=0, workers=workers))
        # Checked when called, before any item is read.
        with pytest.raises(InputError, match="score_threshold applies to detectors"):
            model.predict_many(iter(()), score_threshold=0.5, workers=workers)
        with pytest.raises(InputError, match="prefetch must be a whole number"):
            model.predict_many(files, prefetch=-1, workers=workers)


@pytest.mark.parametrize("workers", [0, -1, 3, 1.5, True, "2"])
def test_bad_workers_are_one_clear_line_before_any_item_is_read(digits_raw_bundle, workers):
    def never():
        raise AssertionError("read")
        yield

    with edgepack_runtime.load(digits_raw_bundle, threads=2) as model:
        with pytest.raises(InputError, match=r"^workers must be a whole number from 1 to the model's 2 thread\(s\), "
                                             r"not .*load with more threads for more workers\)$") as caught:
            model.predict_many(never(), workers=workers)
    assert "\n" not in str(caught.value)


def test_workers_share_the_threads_and_close_releases_their_sessions(digits_raw_bundle, digits_data):
    files, _, _ = digit_pngs(digits_data, 4)
    model = edgepack_runtime.load(digits_raw_bundle, threads=3)
    list(model.predict_many(files, workers=2))
    assert [s.threads for s in model._worker_sessions(2)] == [2, 1]
    model.close()
    with pytest.raises(InferenceError, match="was closed"):
        model.predict_many(files, workers=2)


def test_a_tensor_bundle_refuses_a_stream(digits_bundle):
    with edgepack_runtime.load(digits_bundle) as model:
        with pytest.raises(InputError, match="declares no preprocessing"):
            model.predict_many([b""])


def write_scenes(folder, count: int = 6) -> list[str]:
    from PIL import Image

    folder.mkdir(exist_ok=True)
    names = []
    for i, scene in enumerate((scenes() * 2)[:count]):
        names.append(f"{i:02d}.{('png', 'jpg', 'JPEG')[i % 3]}")
        Image.fromarray(scene).save(folder / names[-1], quality=95)
    return names


def run_cli(*args):
    return subprocess.run([CLI, "run", *map(str, args)], capture_output=True, text=True)


def test_run_over_a_folder_prints_one_line_per_image_in_name_order(detector_bundle, tmp_path):
    names = write_scenes(tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / "sub.png").mkdir()  # a folder named like an image is no image
    shown = run_cli(detector_bundle, "--image", tmp_path / "photos", "--annotate", tmp_path / "drawn")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == sorted(names) and "6 image(s) in" in lines[-1]
    with edgepack_runtime.load(detector_bundle) as model:
        counts = [len(model.predict(str(tmp_path / "photos" / n)).detections) for n in sorted(names)]
    assert [int(line.split(": ")[1].split()[0]) for line in lines[:-1]] == counts and max(counts) > 0
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted(names)
    as_json = run_cli(detector_bundle, "--image", tmp_path / "photos", "--json", "--score-threshold", "0.9")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["image"] for r in rows] == sorted(names) and all("detections" in r for r in rows)


def test_run_over_digits_answers_as_predict(digits_raw_bundle, digits_data, tmp_path):
    files, _, _ = digit_pngs(digits_data, 5)
    (tmp_path / "digits").mkdir()
    for i, png in enumerate(files):
        (tmp_path / "digits" / f"d{i}.png").write_bytes(png)
    shown = run_cli(digits_raw_bundle, "--image", tmp_path / "digits", "--top-k", "1")
    assert shown.returncode == 0, shown.stderr
    with edgepack_runtime.load(digits_raw_bundle) as model:
        expected = [f"d{i}.png: {p.top[0][0]} {p.top[0][1]:.4f}"
                    for i, p in enumerate(model.predict_many(files, top_k=1))]
    assert shown.stdout.splitlines()[:-1] == expected


@pytest.mark.parametrize("setup, extra, code, message", [
    ("empty", [], 1, "holds no images (nothing;"),
    ("text only", [], 1, "holds no images (only 1 other file(s);"),
    ("broken", [], 1, "item 2: {folder}/01.png is not an image"),
    ("fine", ["-o", "{tmp}/out.npz"], 2, "for an --image folder use --json"),
    ("fine", ["--annotate", "{folder}"], 2, "is the input image"),
    ("fine", ["--annotate", "{tmp}/no/such"], 2, "does not exist"),
])
def test_bad_folders_are_one_line_and_a_non_zero_exit(detector_bundle, tmp_path, setup, extra, code, message):
    folder = tmp_path / "photos"
    folder.mkdir()
    if setup == "text only":
        (folder / "readme.txt").write_text("hello")
    if setup in ("broken", "fine"):
        write_scenes(folder, 3)
    if setup == "broken":
        (folder / "01.png").write_bytes(b"\x89PNG broken")
    bad = run_cli(detector_bundle, "--image", folder, *[a.format(folder=folder, tmp=tmp_path) for a in extra])
    assert bad.returncode == code, bad.stderr
    assert message.format(folder=folder) in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    if setup == "broken":  # the images before the broken one were answered, in name order
        assert [line.split(":")[0] for line in bad.stdout.splitlines()] == ["00.png", "01.jpg"]


def test_bench_reports_the_whole_call_and_the_stream_beside_inference(detector_bundle, digits_bundle, tmp_path):
    from PIL import Image

    from edgepack_runtime.bench import BENCH_SCHEMA_VERSION, BenchSettings, run_bench

    Image.fromarray(detector_scene()).save(tmp_path / "scene.jpg")
    quick = BenchSettings(warmup=2, warmup_seconds=0.0, runs=10, min_seconds=0.0)
    doc = run_bench(detector_bundle, "all", [1, 2], quick, image=str(tmp_path / "scene.jpg"))
    assert BENCH_SCHEMA_VERSION == "1.6" and doc["schema_version"] == "1.6"
    # predict_many's default, the figure a user gets: 1 thread, 1 worker; 2 threads, 2 workers of 1.
    assert [r["stream"]["workers"] for r in doc["results"]] == [1, 2]
    row = doc["results"][0]
    whole, stream = row["whole_call"], row["stream"]
    assert set(whole) == {"runs", "latency_ms", "steps_p50_ms"} and set(whole["steps_p50_ms"]) == {
        "preprocess", "inference", "postprocess"}
    # The whole call holds the inference and the preprocessing of the same input.
    assert whole["latency_ms"]["p50"] > whole["steps_p50_ms"]["inference"] and whole["steps_p50_ms"]["preprocess"] > 0
    assert whole["runs"] == stream["frames"] * stream["rounds"] and stream["frames"] >= 20
    assert set(stream) == {"frames", "rounds", "prefetch", "workers", "loop_fps", "pipelined_fps", "speedup",
                           "added_rss_mb"}
    # Two workers hold two more sessions than one worker (which opens none).
    assert doc["results"][1]["stream"]["added_rss_mb"] > stream["added_rss_mb"]
    assert stream["loop_fps"] > 0 and stream["pipelined_fps"] > 0 and stream["speedup"] > 0
    # A bundle that takes tensors has no raw input to measure a whole call on.
    assert "whole_call" not in run_bench(digits_bundle, "all", [1], quick)["results"][0]
