"""Raw inputs in, answers out (issue #13): images decoded and preprocessed as the bundle
declares, labels read from the bundle, the CLI, bench and the limits on hostile images.
The digits bundle takes real 8x8 digit photos (PNG files of the UCI eval set)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime import InputError
from edgepack_runtime.bench import BenchSettings, run_bench
from edgepack_runtime.errors import InputTooLarge, IntegrityError

from ..conftest import DIGIT_LABELS, bomb_png, digit_pngs
from .test_serve import CLI, Server


def test_predict_reads_digit_photos_as_the_model_was_trained(digits_raw_bundle, digits_data):
    files, tensors, labels = digit_pngs(digits_data, 60)
    with edgepack_runtime.load(digits_raw_bundle) as model:
        assert model.raw_input_kind() == "image"
        # The declared preprocessing turns each PNG back into the exact training tensor.
        for png, tensor in zip(files, tensors, strict=True):
            assert np.abs(model.preprocess(png)["image"] - tensor[None]).max() <= 1e-6
        predictions = [model.predict(png, top_k=3) for png in files]
    top1 = [p.top[0][0] for p in predictions]
    accuracy = np.mean([label == DIGIT_LABELS[y] for label, y in zip(top1, labels, strict=True)])
    assert accuracy >= 0.9, accuracy
    for p in predictions:
        scores = [score for _, score in p.top]
        assert len(p.top) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-9
        assert p.preprocess_ms > 0 and p.inference_ms > 0


def test_arrays_paths_and_pil_images_give_the_same_tensor(digits_raw_bundle, digits_data, tmp_path):
    from PIL import Image

    files, tensors, _ = digit_pngs(digits_data, 1)
    (tmp_path / "digit.png").write_bytes(files[0])
    grey = np.asarray(Image.open(io.BytesIO(files[0])))
    with edgepack_runtime.load(digits_raw_bundle) as model:
        as_bytes = model.preprocess(files[0])["image"]
        for source in (str(tmp_path / "digit.png"), tmp_path / "digit.png", Image.open(tmp_path / "digit.png"), grey,
                       np.stack([grey] * 3, axis=-1)):  # an RGB frame of the same grey converts to the same grey
            assert np.array_equal(model.preprocess(source)["image"], as_bytes)
        with pytest.raises(InputError, match="uint8"):
            model.preprocess(grey.astype(np.float32))


def test_bad_images_are_one_clear_error(digits_raw_bundle, digits_data, tmp_path):
    files, _, _ = digit_pngs(digits_data, 1)
    with edgepack_runtime.load(digits_raw_bundle) as model:
        with pytest.raises(InputError, match="not an image"):
            model.predict(b"this is not an image")
        with pytest.raises(InputError, match="cannot be decoded"):
            model.predict(files[0][: len(files[0]) // 2])  # truncated
        with pytest.raises(InputError, match="no image file"):
            model.predict(tmp_path / "missing.png")
        with pytest.raises(InputTooLarge, match="downscale"):
            model.predict(bomb_png())
        with pytest.raises(InputTooLarge, match="downscale"):
            model.predict(bomb_png(8000, 6000))  # 48 MP: under Pillow's own guard, over the runtime's


def test_a_decompression_bomb_is_refused_in_bounded_memory(digits_raw_bundle, tmp_path):
    """Peak RSS of a process that loads the model, then is handed a 10-gigapixel PNG."""
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    script = ("import resource, sys, edgepack_runtime\n"
              "m = edgepack_runtime.load(sys.argv[1]); import PIL.Image, PIL.PngImagePlugin\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "try:\n    m.predict(sys.argv[2])\n"
              "except edgepack_runtime.InputError as e:\n    print(type(e).__name__)\n"
              "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", script, str(digits_raw_bundle), str(tmp_path / "bomb.png")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "InputTooLarge"
    before_kb, after_kb = int(out[1]), int(out[2])
    assert after_kb - before_kb < 32 * 1024, (before_kb, after_kb)  # Pillow imported, header read: nothing decoded


def test_tampered_labels_are_refused(digits_raw_bundle, digits_data, tmp_path):
    bundle = Path(shutil.copytree(digits_raw_bundle, tmp_path / "bundle"))
    (bundle / "labels.txt").write_text("\n".join(reversed(DIGIT_LABELS)) + "\n")
    files, _, _ = digit_pngs(digits_data, 1)
    with edgepack_runtime.load(bundle) as model, pytest.raises(IntegrityError, match="labels.txt"):
        model.predict(files[0])
    verify = subprocess.run([CLI, "verify", bundle], capture_output=True, text=True)
    assert verify.returncode == 1 and "labels.txt" in verify.stderr


def test_run_image_prints_the_labels(digits_raw_bundle, digits_data, tmp_path):
    files, _, labels = digit_pngs(digits_data, 1)
    (tmp_path / "digit.png").write_bytes(files[0])
    env = {**os.environ, "EDGEPACK_TELEMETRY": "0"}
    shown = subprocess.run([CLI, "run", digits_raw_bundle, "--image", tmp_path / "digit.png"], capture_output=True,
                           text=True, env=env)
    assert shown.returncode == 0 and DIGIT_LABELS[labels[0]] in shown.stdout and "preprocess" in shown.stdout
    as_json = subprocess.run([CLI, "run", digits_raw_bundle, "--image", tmp_path / "digit.png", "--json",
                              "--top-k", "2"], capture_output=True, text=True, env=env)
    answer = json.loads(as_json.stdout)
    assert [t["label"] for t in answer["top"]][0] == DIGIT_LABELS[labels[0]] and len(answer["top"]) == 2
    for args, code, words in ((["--text", "seven"], 2, "takes --image"),
                              (["--image", "/etc/hostname"], 1, "not an image"),
                              (["--image", tmp_path / "digit.png", "--input", "image=x.npy"], 2, "exactly one")):
        bad = subprocess.run([CLI, "run", digits_raw_bundle, *args], capture_output=True, text=True, env=env)
        assert bad.returncode == code and words in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_bench_reports_preprocessing_next_to_inference(digits_raw_bundle, digits_data, tmp_path):
    files, _, _ = digit_pngs(digits_data, 1)
    (tmp_path / "digit.png").write_bytes(files[0])
    result = run_bench(digits_raw_bundle, settings=BenchSettings(warmup=1, warmup_seconds=0, runs=5, min_seconds=0))
    pre = result["preprocess"]
    assert pre["input"] == "synthetic 640x480 JPEG" and pre["tensors"] == {"image": [1, 1, 8, 8]}
    assert set(pre["steps_p50_ms"]) == {"decode", "resize_crop", "to_tensor"} and pre["runs"] >= 10
    assert pre["latency_ms"]["p50"] >= max(pre["steps_p50_ms"].values())
    shown = subprocess.run([CLI, "bench", digits_raw_bundle, "--runs", "2", "--min-seconds", "0", "--warmup", "0",
                            "--warmup-seconds", "0", "--image", tmp_path / "digit.png"], capture_output=True, text=True)
    assert shown.returncode == 0 and "preprocess digit.png → 1x1x8x8" in shown.stdout, shown.stderr


def test_a_bundle_without_preprocessing_says_how_to_get_it(digits_bundle):
    with edgepack_runtime.load(digits_bundle, artifact="onnx-fp32") as model:
        assert model.raw_input_kind() is None
        with pytest.raises(InputError, match="--preprocess"):
            model.predict(b"\x89PNG")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_the_server_answers_image_uploads_and_refuses_bombs(digits_raw_bundle, digits_data, tmp_path):
    files, _, labels = digit_pngs(digits_data, 20)
    server = Server(digits_raw_bundle, tmp_path)
    try:
        for png, _label in zip(files, labels, strict=True):
            status, body, _ = server.request("POST", "/v1/predict", png, {"content-type": "image/png"})
            assert status == 200, body
            answer = json.loads(body)
            assert answer["artifact"] == "onnx-fp32" and len(answer["top"]) == 5 and answer["preprocess_ms"] > 0
        served = _peak_rss_mb(server.proc.pid)
        for bomb in (bomb_png(), bomb_png(8000, 6000)):
            status, body, _ = server.request("POST", "/v1/predict", bomb, {"content-type": "image/png"})
            assert status == 413 and "downscale" in json.loads(body)["detail"]
        assert _peak_rss_mb(server.proc.pid) - served < 32, "the bombs were decoded"
        for body, kind, code in ((b"not an image", "image/jpeg", 422), (files[0][:40], "image/png", 422),
                                 (b"seven", "text/plain", 415)):
            status, reply, _ = server.request("POST", "/v1/predict", body, {"content-type": kind})
            assert status == code, (kind, reply[:200])
        # Tensors still work beside images.
        with np.load(digits_data / "eval.npz") as data:
            status, _, _ = server.predict(data["image"][:1])
        assert status == 200
    finally:
        server.stop()
    import sqlite3

    with sqlite3.connect(server.db) as db:  # telemetry saw the preprocessed tensors' inferences
        assert db.execute("SELECT COUNT(*) FROM events WHERE outcome = 'ok'").fetchone()[0] == 21
