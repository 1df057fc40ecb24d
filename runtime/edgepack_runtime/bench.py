"""Honest latency benchmarks: warm-up, explicit threads, percentiles, provenance.

Each artifact × thread count is measured in its own fresh Python process, so cold
start (import + load) is real and peak RSS belongs to that artifact alone. The
result format is documented in docs/bench-format.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np

from .bundle import Bundle, open_bundle
from .device import device_info, temperatures_c
from .dims import resize, size_label
from .errors import BenchError, InputError, last_line
from .model import AUTO, default_threads
from .parity import split_samples
from .stats import PERCENTILE_METHOD, latency_summary
from .subprocesses import run_checked

if TYPE_CHECKING:
    from .model import Model

__all__ = ["BenchSettings", "run_bench", "BENCH_SCHEMA_VERSION"]

# "MAJOR.MINOR" (versions.py). 1.1: results[].sizes (bench --size). 1.2: preprocess.
# 1.3: postprocess (a detector's decode + NMS). 1.4: preprocess.resize (a letterbox's
# implementation: OpenCV or numpy, same pixels, different speed). 1.5: results[].whole_call
# and results[].stream (predict and predict_many on the raw input, bundles that declare preprocessing).
# 1.6: results[].stream.workers and .added_rss_mb (predict_many's default workers, each with a
# session of its own, and the memory they hold); results[].peak_rss_mb is taken before the stream.
BENCH_SCHEMA_VERSION = "1.6"
RANDOM_INPUT_SEED = 0
WORKER_TIMEOUT_S = 3600
# Runs in the fresh process: the clock starts before edgepack_runtime is imported.
_WORKER = (
    "import time; t0 = time.perf_counter(); import sys, json; "
    "from edgepack_runtime.bench import _worker; print(json.dumps(_worker(t0, json.loads(sys.argv[1]))))"
)


@dataclass(frozen=True)
class BenchSettings:
    warmup: int = 10  # at least this many warm-up runs …
    warmup_seconds: float = 1.0  # … and at least this long
    runs: int = 100  # at least this many timed runs …
    min_seconds: float = 3.0  # … and at least this long
    inputs: str = "real"  # "real": the bundle's golden inputs; "random": seeded random


# What preprocessing is measured on when no --image/--text is given: a camera-sized frame
# (a smooth synthetic scene, JPEG quality 90), and a sentence of everyday length.
SAMPLE_IMAGE_SIZE = (640, 480)
SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden gate."
PREPROCESS_SECONDS = 1.0
# The whole call and the stream (results[].whole_call, .stream): rounds that alternate a loop
# of predict calls and predict_many over the same frames, so machine noise hits both alike.
# A round's frame count is what the first loop of predict calls runs in STREAM_SECONDS
# (at most the --min-seconds), and at least STREAM_MIN_FRAMES.
STREAM_ROUNDS = 3
STREAM_SECONDS = 1.0
STREAM_MIN_FRAMES = 20


def _sample_jpeg() -> bytes:
    from PIL import Image

    width, height = SAMPLE_IMAGE_SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([128 + 100 * np.sin(x / 37.0), 128 + 100 * np.cos(y / 23.0),
                      128 + 60 * np.sin((x + y) / 51.0)], axis=-1)
    scene += np.random.default_rng(RANDOM_INPUT_SEED).normal(0, 12, scene.shape)  # sensor noise
    buffer = io.BytesIO()
    Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def preprocess_cost(bundle: Bundle, image: str | Path | None = None, text: Optional[str] = None,
                    seconds: float = PREPROCESS_SECONDS) -> Optional[Callable[[], dict[str, Any]]]:
    """A measurement of the bundle's declared preprocessing on this device, step by step
    (an image from its encoded bytes: decode, resize + crop, to tensor), ready to run:
    the pipeline and the sample are prepared now, so a missing Pillow or an unreadable
    --image fails before any benchmark runs. None without preprocessing."""
    pre = bundle.manifest.preprocessing
    kind = None if pre is None else pre.kind
    for flag, given in (("image", image), ("text", text)):
        if given is not None and kind != flag:
            raise InputError(f"--{flag} is for bundles that take {flag}s; {bundle.manifest.name} takes "
                             f"{kind + 's' if kind else 'tensors only'}")
    if pre is None:
        return None
    from .letterbox import resize_backend
    from .preprocess import ImagePipeline, pipeline

    steps = pipeline(bundle)
    implementation: dict[str, str] = {}  # what ran where two implementations make the same tensors
    sample: Union[bytes, str]
    stages: dict[str, Callable[[Any], Any]]
    image_input = ""  # the image's tensor: what its last stage makes
    if isinstance(steps, ImagePipeline):  # the bundle declares image steps
        if image is not None:
            try:
                sample, what = Path(image).read_bytes(), Path(image).name
            except OSError as exc:
                raise InputError(f"cannot read --image {image} ({exc.strerror})") from exc
        else:
            sample, what = _sample_jpeg(), f"synthetic {SAMPLE_IMAGE_SIZE[0]}x{SAMPLE_IMAGE_SIZE[1]} JPEG"
        stages = {"decode": steps.decode, "resize_crop": steps.geometry, "to_tensor": steps.to_tensor}
        image_input = steps.steps.input
        if steps.steps.letterbox:
            implementation["resize"] = resize_backend()
    else:
        stages, sample = {"tokenize": steps}, text if text is not None else SAMPLE_TEXT
        what = f"{len(sample)}-character text"
    first = next(iter(stages))

    def measure() -> dict[str, Any]:
        timings: dict[str, list[float]] = {name: [] for name in stages}
        value: Any
        start, value = time.perf_counter(), sample
        while time.perf_counter() - start < seconds or len(timings[first]) < 10:
            value = sample
            for name, stage in stages.items():
                t = time.perf_counter()
                value = stage(value)
                timings[name].append(time.perf_counter() - t)
        totals = [sum(step) for step in zip(*timings.values())]
        shapes = ({k: list(v.shape) for k, v in value.items()} if isinstance(value, dict)
                  else {image_input: list(value.shape)})
        return {"input": what, "tensors": shapes, "runs": len(totals), "latency_ms": latency_summary(totals),
                "steps_p50_ms": {name: latency_summary(t)["p50"] for name, t in timings.items()}, **implementation}

    value: Any = sample  # one pass now: a sample the pipeline cannot take fails here, before the workers
    for stage in stages.values():
        value = stage(value)
    return measure


def postprocess_cost(bundle: Bundle,
                     seconds: float = PREPROCESS_SECONDS) -> Optional[Callable[[], dict[str, Any]]]:
    """A measurement of a detector's postprocessing (decode, then class-aware NMS, with the
    manifest's thresholds) on its golden outputs, PyTorch's answers to real inputs, cycled;
    ready to run. None for bundles that do not answer with detections."""
    post = bundle.manifest.postprocessing
    if post is None or post.detection is None:  # (the reader gives detections, and only them, their settings)
        return None
    from .detection import decode, nms

    _, outputs = bundle.golden()
    samples = outputs[post.output]
    settings = post.detection

    def measure() -> dict[str, Any]:
        timings: dict[str, list[float]] = {"decode": [], "nms": []}
        found: list[int] = []
        candidates: list[int] = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(found) < 10:
            sample = samples[len(found) % len(samples)]
            t0 = time.perf_counter()
            decoded = decode(sample, settings.score_threshold)
            t1 = time.perf_counter()
            kept = nms(decoded, settings.iou_threshold, settings.max_detections)
            timings["decode"].append(t1 - t0)
            timings["nms"].append(time.perf_counter() - t1)
            candidates.append(len(decoded))
            found.append(len(kept))
        totals = [a + b for a, b in zip(timings["decode"], timings["nms"])]
        return {"output": post.output, "shape": list(samples.shape[1:]), "samples": len(samples), "runs": len(totals),
                "candidates_mean": float(np.mean(candidates)), "detections_mean": float(np.mean(found)),
                "latency_ms": latency_summary(totals),
                "steps_p50_ms": {name: latency_summary(t)["p50"] for name, t in timings.items()}}

    return measure


def _raw_sample(spec: dict[str, Any]) -> Union[bytes, str]:
    """The raw input the whole call is measured on (the one preprocess_cost measures)."""
    if spec["kind"] == "image":
        return Path(spec["image"]).read_bytes() if spec["image"] else _sample_jpeg()
    return str(spec["text"]) if spec["text"] is not None else SAMPLE_TEXT


def whole_call_cost(model: Model, sample: Union[bytes, str],
                    seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole `predict` call on `sample` (decode + preprocess + infer + postprocess), and
    frames per second over it repeated: a loop of `predict` calls against `predict_many` with
    its defaults (the figure a user gets), in STREAM_ROUNDS alternating rounds of the same
    frame count; medians, and the median of the per-round ratios."""
    from .stream import PREFETCH, default_workers

    workers = default_workers(model.threads)  # what predict_many runs below
    resident = _resident_mb()
    # Warm: the pipeline, its caches, the workers' sessions, the pools' threads.
    list(model.predict_many([sample] * (PREFETCH + workers + 1)))
    calls: list[float] = []
    steps: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    loop_fps: list[float] = []
    stream_fps: list[float] = []
    frames = 0
    for round_ in range(STREAM_ROUNDS):
        start = time.perf_counter()
        while (len(calls) < frames * (round_ + 1) if round_ else
               len(calls) < STREAM_MIN_FRAMES or time.perf_counter() - start < seconds):
            t = time.perf_counter()
            prediction = model.predict(sample)
            calls.append(time.perf_counter() - t)
            for name in steps:
                steps[name].append(getattr(prediction, f"{name}_ms"))
        frames = frames or len(calls)
        loop_fps.append(frames / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in model.predict_many(sample for _ in range(frames)):
            pass
        stream_fps.append(frames / (time.perf_counter() - start))
    whole = {"runs": len(calls), "latency_ms": latency_summary(calls),
             "steps_p50_ms": {name: float(np.median(ms)) for name, ms in steps.items()}}
    # What the stream holds on to: the workers' sessions (open until close()), the pipeline.
    now = _resident_mb()
    stream = {"frames": frames, "rounds": STREAM_ROUNDS, "prefetch": PREFETCH, "workers": workers,
              "loop_fps": float(np.median(loop_fps)), "pipelined_fps": float(np.median(stream_fps)),
              "speedup": float(np.median([s / loop for s, loop in zip(stream_fps, loop_fps)])),
              "added_rss_mb": None if resident is None or now is None else now - resident}
    return whole, stream


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _resident_mb() -> Optional[float]:
    """This process's resident memory now (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize() / 2**20


def _feeds(bundle: Bundle, how: str, sizes: Optional[dict[str, int]] = None) -> list[dict[str, np.ndarray]]:
    """The golden inputs (or random ones shaped like them), at `sizes` of the dynamic dims."""
    inputs, _ = bundle.golden()
    if sizes:
        inputs = resize(bundle.manifest.inputs, inputs, sizes, stacked=True)
    if how == "random":
        rng = np.random.default_rng(RANDOM_INPUT_SEED)
        inputs = {k: rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f" else v
                  for k, v in inputs.items()}
    elif how != "real":
        raise InputError(f"--inputs must be real or random, not {how!r}")
    return split_samples(inputs)


def _worker(t0: float, spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one artifact × thread count; runs in a fresh process (see _WORKER)."""
    from edgepack_runtime import load  # noqa: F401  (import time is part of cold start)

    model = load(spec["bundle"], artifact=spec["artifact"], threads=spec["threads"])
    cold_start = time.perf_counter() - t0
    feeds = _feeds(model.bundle, spec["inputs"], spec["sizes"])
    t = time.perf_counter()
    model.run(feeds[0])
    first = time.perf_counter() - t

    def loop(min_runs: int, min_seconds: float) -> list[float]:
        timings: list[float] = []
        start = time.perf_counter()
        while len(timings) < min_runs or time.perf_counter() - start < min_seconds:
            feed = feeds[len(timings) % len(feeds)]
            t = time.perf_counter()
            model.run(feed)
            timings.append(time.perf_counter() - t)
        return timings

    loop(spec["warmup"], spec["warmup_seconds"])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    timings = loop(spec["runs"], spec["min_seconds"])
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    peak_rss_mb = _peak_rss_mb()  # before the stream's workers open sessions of their own
    whole_call: dict[str, Any] = {}
    if spec.get("raw"):  # after the inference figures: the stream's threads do not touch them
        whole, stream = whole_call_cost(model, _raw_sample(spec["raw"]), min(STREAM_SECONDS, spec["min_seconds"]))
        whole_call = {"whole_call": whole, "stream": stream}
    return {
        **model.provenance(),
        "cold_start_ms": cold_start * 1e3,
        "first_inference_ms": first * 1e3,
        "latency_ms": latency_summary(timings),
        "throughput_per_s": len(timings) / wall,
        "cpu_ms_per_inference": cpu / len(timings) * 1e3,
        "peak_rss_mb": peak_rss_mb,
        "runs": len(timings),
        "timed_seconds": wall,
        **whole_call,
    }


def _measure(bundle: Bundle, artifact: str, threads: int, settings: BenchSettings,
             sizes: Optional[dict[str, int]], raw: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    spec = {"bundle": str(bundle.root), "artifact": artifact, "threads": threads, "sizes": sizes,
            "raw": raw, **asdict(settings)}
    at = f" at {size_label(sizes)}" if sizes else ""
    proc = run_checked([sys.executable, "-c", _WORKER, json.dumps(spec)], f"benchmarking {artifact} with {threads} "
                       f"thread(s){at}", "run `edgepack-runtime verify` on the bundle, or measure fewer --runs",
                       error=BenchError, timeout=WORKER_TIMEOUT_S)
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"benchmarking {artifact} with {threads} thread(s){at} printed no result "
                         f"({last_line(proc.stderr, 'no output')})") from None
    return result


def plan(bundle: Bundle, artifact: str, threads: Optional[Sequence[int]]) -> list[tuple[str, int]]:
    """(artifact, threads) pairs to measure. `artifact`: a name, "all" or "auto"."""
    from .model import candidates

    if artifact == AUTO:
        from .autoselect import auto_choice

        choice = auto_choice(bundle)
        return [(choice.artifact, t) for t in (threads or [choice.threads])]
    names = [a.name for a in candidates(bundle)] if artifact == "all" else [bundle.manifest.artifact(artifact).name]
    return [(name, t) for name in names for t in (threads or [default_threads(bundle)])]


def size_plan(bundle: Bundle, sizes: Optional[dict[str, Sequence[int]]]) -> Sequence[Optional[dict[str, int]]]:
    """Every combination of the requested sizes of the bundle's dynamic dims ([None]: as built)."""
    if not sizes:
        return [None]
    ranges = {d.name: d for s in bundle.manifest.inputs for d in s.dynamic}
    for name, values in sizes.items():
        if name not in ranges:
            known = ", ".join(f"{d.name}={d.min}..{d.max}" for d in ranges.values()) or "none"
            raise InputError(f"--size {name}: the bundle has no dynamic dim {name!r} (its dynamic dims: {known})")
        outside = [v for v in values if not ranges[name].min <= v <= ranges[name].max]
        if outside:
            raise InputError(f"--size {name}={outside[0]} is outside the range the bundle was built for "
                             f"({ranges[name].min}..{ranges[name].max})")
    combos: list[dict[str, int]] = [{}]
    for name, values in sizes.items():
        combos = [{**c, name: v} for c in combos for v in values]
    return combos


def run_bench(path: str | Path, artifact: str = "all", threads: Optional[Sequence[int]] = None,
              settings: BenchSettings = BenchSettings(),
              progress: Callable[[str, int, int], None] = lambda label, done, total: None,
              sizes: Optional[dict[str, Sequence[int]]] = None, image: str | Path | None = None,
              text: Optional[str] = None) -> dict[str, Any]:
    """Benchmark a bundle on this device; returns the result document (docs/bench-format.md).
    `sizes`: sizes of the bundle's dynamic dims to measure at, e.g. {"seq": [16, 128]}.
    A bundle that declares preprocessing also has its cost measured, on `image` / `text`
    (default: a synthetic 640x480 JPEG / an everyday sentence), and a detector its decoding
    and NMS, on its golden outputs."""
    bundle = open_bundle(path)
    bundle.verify_integrity()
    measure_preprocess = preprocess_cost(bundle, image, text)
    measure_postprocess = postprocess_cost(bundle)
    pre = bundle.manifest.preprocessing
    # The whole call, in each worker at the size the bundle was built at: a raw input makes that size.
    raw = None if pre is None else {"kind": pre.kind, "image": None if image is None else str(image), "text": text}
    pairs = [(name, n, at) for at in size_plan(bundle, sizes) for name, n in plan(bundle, artifact, threads)]
    device = device_info()
    temperature_before = device.pop("temperature_c")
    by_name = {a.name: a for a in bundle.manifest.artifacts}
    macs = bundle.manifest.macs
    results = []
    for i, (name, n_threads, at) in enumerate(pairs):
        progress(f"{name} × {n_threads} thread(s)" + (f" at {size_label(at)}" if at else ""), i, len(pairs))
        art = by_name[name]
        measured = _measure(bundle, name, n_threads, settings, at, None if at else raw)
        p50_s = measured["latency_ms"]["p50"] / 1e3
        results.append({
            "artifact": name,
            "format": art.format,
            "precision": art.precision,
            **({"sizes": at} if at else {}),
            **measured,
            "gmacs_per_s": macs / p50_s / 1e9 if macs else None,
            "accuracy": ({"top1": art.accuracy.top1, "reference_top1": art.accuracy.reference_top1,
                          "cosine": art.accuracy.cosine, "top1_agreement": art.accuracy.top1_agreement,
                          "measured_on": art.accuracy.measured_on,
                          "indicative": art.accuracy.indicative,
                          # the task's headline figure (schema 1.3 of this file; manifest 2.3)
                          "metric": (dataclasses.asdict(art.accuracy.metrics[0]) if art.accuracy.metrics
                                     else None)} if art.accuracy else None),
        })
    progress("preprocessing", len(pairs), len(pairs) + 1)
    preprocess = measure_preprocess() if measure_preprocess else None
    postprocess = measure_postprocess() if measure_postprocess else None
    progress("done", len(pairs), len(pairs))
    return {
        "schema_version": BENCH_SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {**device, "temperature_c": {"before": temperature_before, "after": temperatures_c()}},
        "bundle": {"name": bundle.manifest.name, "target": bundle.manifest.target.get("id"),
                   "sha256": bundle.sha256, "macs": macs},
        "settings": {**asdict(settings), "artifact": artifact, "percentile_method": PERCENTILE_METHOD,
                     "isolation": "one fresh process per artifact x threads"},
        "results": results,
        **({"preprocess": preprocess} if preprocess else {}),
        **({"postprocess": postprocess} if postprocess else {}),
    }
