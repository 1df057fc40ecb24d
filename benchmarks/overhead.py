"""Per-call overhead of `Model.run` over a bare backend call (not a test: a measurement).

For each artifact of each bundle given, times N calls of the bare backend (an
onnxruntime InferenceSession / a LiteRT signature runner, set up exactly as the runtime
sets it up) and N calls of `edgepack_runtime.Model.run`, interleaved in rounds so that
machine noise hits both alike, and reports the difference of the medians in µs and %. For integer-I/O artifacts the
fair comparison is `run(raw=True)` (same integer tensors as the bare call); `run` also
(de)quantizes in numpy, reported as its own column. The last column is what local
telemetry adds per call (`load(..., telemetry=True)`: the record, drift histogram of the
inputs, written to a throwaway database).

    python benchmarks/overhead.py dist/digits-host dist/mnv2-host --rounds 7 --calls 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import edgepack_runtime


def native_feeds(model) -> dict[str, np.ndarray]:
    """Zeros in the artifact's own input dtypes (int8 for full-integer TFLite)."""
    native = model.native_dtypes()
    return {s.name: np.zeros(s.shape, native.get(s.name, np.dtype(s.dtype))) for s in model.inputs}


def bare_call(model):
    """The backend call `Model.run` wraps, set up the same way, without its checks or renaming."""
    session, feeds = model._session, native_feeds(model)
    if model.artifact.format == "onnx":
        ort, names = session._session, session._output_names
        return lambda: ort.run(names, feeds)
    runner = session._runner
    sig_feeds = {session._input_names[k]: v for k, v in feeds.items()}
    return lambda: runner(**sig_feeds)


def median_call_us(fn, calls: int) -> float:
    timings = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        fn()
        timings.append(time.perf_counter_ns() - t)
    return statistics.median(timings) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("EDGEPACK_TELEMETRY_DB", os.path.join(tempfile.mkdtemp(), "overhead.sqlite"))
    os.environ.pop("EDGEPACK_TELEMETRY", None)
    print(f"{'bundle':<14} {'artifact':<20} {'bare µs':>10} {'run µs':>10} {'overhead µs':>12} {'%':>7} "
          f"{'(de)quantize µs':>16} {'telemetry µs':>13}")
    for path in args.bundles:
        bundle = edgepack_runtime.open_bundle(path)
        for art in bundle.manifest.artifacts:
            if not art.usable:
                continue
            model = edgepack_runtime.load(path, artifact=art.name, threads=args.threads)
            integer_io = bool(model.native_dtypes()) and any(d.kind in "iu" for d in model.native_dtypes().values())
            x = {spec.name: np.zeros(spec.shape, spec.dtype) for spec in model.inputs}
            raw = native_feeds(model)
            recorded = edgepack_runtime.load(path, artifact=art.name, threads=args.threads, telemetry=True)
            calls = {"bare": bare_call(model), "run": lambda model=model, x=x: model.run(x),
                     "telemetry": lambda recorded=recorded, x=x: recorded.run(x)}
            if integer_io:
                calls["raw"] = lambda model=model, raw=raw: model.run(raw, raw=True)
            for fn in calls.values():  # warm-up
                for _ in range(50):
                    fn()
            samples = {k: [] for k in calls}
            for _ in range(args.rounds):  # interleaved, so noise hits every variant alike
                for key, fn in calls.items():
                    samples[key].append(median_call_us(fn, args.calls))
            m = {k: statistics.median(v) for k, v in samples.items()}
            wrapped = m.get("raw", m["run"])
            dq = f"{m['run'] - m['raw']:>16.2f}" if integer_io else f"{'-':>16}"
            print(f"{bundle.manifest.name:<14} {art.name:<20} {m['bare']:>10.2f} {wrapped:>10.2f} "
                  f"{wrapped - m['bare']:>12.2f} {100 * (wrapped - m['bare']) / m['bare']:>6.2f}% {dq} "
                  f"{m['telemetry'] - m['run']:>13.2f}")


if __name__ == "__main__":
    main()
