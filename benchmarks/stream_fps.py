"""Frames per second of `Model.predict_many` against a loop of `Model.predict` over a
folder of images (not a test: a measurement, issue 30).

Both read the same files (paths, so decoding is part of every call), in rounds that
alternate loop and stream so that machine noise hits both alike; reports each round's fps,
the medians and the median of the per-round ratios, and checks that the stream's answers
equal the loop's.

    python benchmarks/stream_fps.py BUNDLE FOLDER [--artifact onnx-fp32] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import edgepack_runtime
from edgepack_runtime.folder import image_files


def identical(a, b) -> bool:
    return (a.top == b.top and a.detections == b.detections
            and all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--artifact", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=2)
    args = parser.parse_args()
    files = [str(f) for f in image_files(args.folder)]
    with edgepack_runtime.load(args.bundle, artifact=args.artifact, threads=args.threads) as model:
        list(model.predict_many(files[:4], prefetch=args.prefetch))  # warm: pipeline, caches, pool
        loop_fps, stream_fps, ratios = [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            looped = [model.predict(f) for f in files]
            loop_fps.append(len(files) / (time.perf_counter() - start))
            start = time.perf_counter()
            streamed = list(model.predict_many(files, prefetch=args.prefetch))
            stream_fps.append(len(files) / (time.perf_counter() - start))
            ratios.append(stream_fps[-1] / loop_fps[-1])
            assert len(streamed) == len(looped) and all(identical(a, b) for a, b in zip(streamed, looped, strict=True))
        pre = statistics.median(p.preprocess_ms for p in looped)
        inf = statistics.median(p.inference_ms for p in looped)
        post = statistics.median(p.postprocess_ms for p in looped)
        print(f"{model.bundle.manifest.name} {model.artifact.name} x {model.threads} thread(s), {len(files)} images, "
              f"prefetch {args.prefetch}; loop p50 per image: preprocess {pre:.2f} ms, inference {inf:.2f} ms, "
              f"postprocess {post:.2f} ms")
        print("loop fps   " + " ".join(f"{v:.1f}" for v in loop_fps) + f"  median {statistics.median(loop_fps):.1f}")
        print("stream fps " + " ".join(f"{v:.1f}" for v in stream_fps)
              + f"  median {statistics.median(stream_fps):.1f}")
        print("ratio      " + " ".join(f"{v:.2f}" for v in ratios) + f"  median {statistics.median(ratios):.2f}x; "
              "answers identical in every round")


if __name__ == "__main__":
    main()
