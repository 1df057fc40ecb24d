"""Frames per second of `Model.predict_many` against a loop of `Model.predict` over a
folder of images (not a test: a measurement, issue 30).

Both read the same files (paths, so decoding is part of every call), in rounds that
alternate loop and stream(s) so that machine noise hits them alike; reports each round's
fps, the medians and the median of the per-round ratios, and checks that the stream's
answers equal the loop's. `--workers 1,2` measures a stream per worker count, in the same
rounds (default: predict_many's own, stream.default_workers).

    python benchmarks/stream_fps.py BUNDLE FOLDER [--artifact onnx-fp32] [--threads 2] [--rounds 3]
        [--prefetch 2] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import edgepack_runtime
from edgepack_runtime.folder import image_files
from edgepack_runtime.stream import default_workers


def identical(a, b) -> bool:
    return (a.top == b.top and a.detections == b.detections
            and all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs))


def row(name: str, values: list[float], unit: str = "") -> str:
    return f"{name:<18}" + " ".join(f"{v:6.2f}" for v in values) + f"   median {statistics.median(values):.2f}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--artifact", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--workers", default=None, help="comma-separated worker counts")
    args = parser.parse_args()
    files = [str(f) for f in image_files(args.folder)]
    with edgepack_runtime.load(args.bundle, artifact=args.artifact, threads=args.threads) as model:
        counts = ([int(w) for w in args.workers.split(",")] if args.workers is not None
                  else [default_workers(model.threads)])
        for workers in counts:  # warm: pipeline, caches, each count's sessions, pools
            list(model.predict_many(files[:4], prefetch=args.prefetch, workers=workers))
        loop_fps: list[float] = []
        stream_fps: dict[int, list[float]] = {w: [] for w in counts}
        for _ in range(args.rounds):
            start = time.perf_counter()
            looped = [model.predict(f) for f in files]
            loop_fps.append(len(files) / (time.perf_counter() - start))
            for workers in counts:
                start = time.perf_counter()
                streamed = list(model.predict_many(files, prefetch=args.prefetch, workers=workers))
                stream_fps[workers].append(len(files) / (time.perf_counter() - start))
                assert len(streamed) == len(looped) and all(
                    identical(a, b) for a, b in zip(streamed, looped, strict=True)), f"{workers} worker(s) differ"
        pre = statistics.median(p.preprocess_ms for p in looped)
        inf = statistics.median(p.inference_ms for p in looped)
        post = statistics.median(p.postprocess_ms for p in looped)
        print(f"{model.bundle.manifest.name} {model.artifact.name} x {model.threads} thread(s), {len(files)} images, "
              f"{args.rounds} rounds, prefetch {args.prefetch}; loop p50 per image: preprocess {pre:.2f} ms, "
              f"inference {inf:.2f} ms, postprocess {post:.2f} ms")
        print(row("loop fps", loop_fps))
        for workers, fps in stream_fps.items():
            print(row(f"stream {workers}w fps", fps))
            print(row("  ratio", [s / loop for s, loop in zip(fps, loop_fps, strict=True)], "x"))
        print("answers identical to the loop's in every round")


if __name__ == "__main__":
    main()
