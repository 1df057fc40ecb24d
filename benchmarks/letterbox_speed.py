"""The letterbox's speed, before and after, in one run (issue 30): medians of the resize +
border, and of decode + letterbox + tensor, for a previous revision's letterbox.py, the
current numpy path and OpenCV, asserting the tensors are equal.

    PYTHONPATH=runtime:. python benchmarks/letterbox_speed.py photo.jpg --before 4af2ba8
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgepack_runtime import letterbox as current
from edgepack_runtime.manifest import ImageSteps, TensorSpec
from edgepack_runtime.preprocess import ImagePipeline

INPUT = 640
RUNS = 40


def _module_at(revision: str):
    """letterbox.py as it was at `revision`, imported under another name."""
    source = subprocess.run(["git", "show", f"{revision}:runtime/edgepack_runtime/letterbox.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "letterbox_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("edgepack_runtime.letterbox_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _median_ms(call) -> float:
    call()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--before", default="HEAD", help="git revision of the letterbox to compare with")
    args = parser.parse_args()
    before = _module_at(args.before)
    data = Path(args.image).read_bytes()
    pipeline = ImagePipeline(ImageSteps(input="images", resize=(INPUT, INPUT), letterbox=True, pad_value=114),
                             TensorSpec("images", (1, 3, INPUT, INPUT), "float32"))
    opencv = current._opencv()
    rgb = np.asarray(pipeline.decode(data))

    def through(module, call):
        def run():
            current._opencv = lambda: module  # None: the numpy path
            return call()
        return run

    def with_resize(module):
        return through(module, lambda: current.letterbox(rgb, INPUT, INPUT))

    def prepare(module):
        return through(module, lambda: pipeline.prepare(data)[0])

    def prepare_before():  # today's decode and to_tensor around the old letterbox
        return pipeline.to_tensor(before.letterbox(np.asarray(pipeline.decode(data)), INPUT, INPUT)[0])

    reference = prepare_before()
    assert all(np.array_equal(prepare(m)(), reference) for m in (None, opencv)), "tensors differ"
    rows = {"letterbox": (lambda: before.letterbox(rgb, INPUT, INPUT), with_resize(None), with_resize(opencv)),
            "decode + letterbox + tensor": (prepare_before, prepare(None), prepare(opencv))}
    print(f"{Path(args.image).name} {rgb.shape[1]}x{rgb.shape[0]} -> {INPUT}x{INPUT}, medians of {RUNS}, ms "
          f"(before = {args.before}; tensors equal)")
    for name, (old, numpy_now, opencv_now) in rows.items():
        b, n = _median_ms(old), _median_ms(numpy_now)
        o = _median_ms(opencv_now) if opencv is not None else float("nan")
        print(f"  {name}: before {b:.2f} | numpy {n:.2f} ({b / n:.1f}x) | opencv {o:.2f} ({b / o:.1f}x)")


if __name__ == "__main__":
    main()
