"""`Model.predict_many`: a stream of raw inputs answered in order, several items in flight.

Decoding (Pillow), the letterbox (OpenCV) and the backends (onnxruntime, LiteRT) release
the GIL, so on a multi-core device the work of several items runs at once:

- the next `prefetch` items are decoded and preprocessed on a small thread pool;
- `workers` items infer at once, each worker on a backend session of its own with a share
  of the model's threads. Small layers scale badly over threads: two 1-thread inferences
  side by side finish more frames per second than one 2-thread inference after another.

Answers come back in input order, each the one `Model.predict` gives: the backends split a
layer's outputs between threads, never the sum that makes one output, so a 1-thread and a
2-thread session compute the same numbers (measured bit for bit, onnxruntime and LiteRT,
fp32 and int8). Telemetry and drift record each answered item once, in input order, on the
caller's thread. With one worker, inference and postprocessing stay on the caller's thread
with the model's own session, as before workers existed.
"""

from __future__ import annotations

import os
import queue
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np

from .errors import EdgepackError, InputError

if TYPE_CHECKING:
    from .backends import Session
    from .letterbox import Geometry
    from .model import Model
    from .postprocess import Prediction

    # An item's input tensors, its Geometry, and the milliseconds preprocessing took.
    Prepared = tuple[dict[str, np.ndarray], Optional[Geometry], float]

__all__ = ["PREFETCH", "MAX_DEFAULT_WORKERS", "default_workers", "predict_stream", "describe_item"]

# Items prepared ahead of the ones inferring. Two hide preprocessing behind inference when
# one takes longer than the other now and then; memory stays that of a few inputs and
# their tensors however long the stream is.
PREFETCH = 2
# Workers by default. Measured on 2 cores (the YOLO example's bundle, 100 frames, frames/s
# against a loop of predict): 2 workers of 1 thread beat 1 worker of 2 threads on every
# artifact (onnx-fp32 1.16x vs 1.00x, onnx-int8 1.43x vs 1.01x, tflite-int8 1.25x vs
# 1.09x, tflite-fp32 1.23x vs 1.20x). More than 2, each with memory of its own, were not
# measured on a device with more cores: 4 threads run as 2 workers of 2.
MAX_DEFAULT_WORKERS = 2
DESCRIBE_CHARS = 40  # of a text item, in an error message


def default_workers(threads: int) -> int:
    """predict_many's workers for a model of `threads` threads: 2 from 2 threads on, else 1
    (see MAX_DEFAULT_WORKERS for the measurement, README "Streams" for the figures)."""
    return max(1, min(threads, MAX_DEFAULT_WORKERS))


def describe_item(value: Any) -> str:
    """A stream item in a few words, for the error that names it."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        return repr(text[:DESCRIBE_CHARS] + ("…" if len(text) > DESCRIBE_CHARS else ""))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value):,} bytes"
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array {list(value.shape)}"
    size = getattr(value, "size", None)
    if isinstance(size, tuple) and len(size) == 2:
        return f"{type(value).__name__} {size[0]}x{size[1]}"
    return type(value).__name__


def _naming_item(exc: EdgepackError, index: int, value: Any) -> EdgepackError:
    """`exc` again, of its own class, its message led by which item failed."""
    message = str(exc)
    named_already = isinstance(value, (str, os.PathLike)) and os.fspath(value) in message  # "no image file at …"
    lead = f"item {index}" if named_already else f"item {index} ({describe_item(value)})"
    try:
        named = type(exc)(f"{lead}: {message}")
    except TypeError:  # a subclass with a constructor of its own: the family it belongs to
        named = InputError(f"{lead}: {message}")
    named.item = index  # type: ignore[attr-defined]
    return named


def predict_stream(model: Model, values: Iterable[Any], prefetch: int, workers: Optional[int], channels: str,
                   **answer: Any) -> Iterator[Prediction]:
    """Predictions for `values`, in order (see Model.predict_many). `answer`: top_k and the
    thresholds, checked by the caller. With prefetch=0 and one worker, a plain loop on this
    thread. `workers` None: default_workers(model.threads)."""
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise InputError(f"prefetch must be a whole number of items, 0 or more, not {str(prefetch)[:40]!r}")
    threads = model.threads  # a closed model: InferenceError now
    if workers is None:
        workers = default_workers(threads)
    elif isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= threads:
        raise InputError(f"workers must be a whole number from 1 to the model's {threads} thread(s), not "
                         f"{str(workers)[:40]!r}: the workers share those threads (load with more threads "
                         "for more workers)")
    if workers == 1:  # checked now, not at the first item
        return _stream(model, values, prefetch, channels, answer)
    return _parallel_stream(model, values, prefetch, workers, channels, answer)


def _preparing(model: Model, channels: str) -> Callable[[Any], Prepared]:
    """Preprocessing of one item, timed."""

    def prepare(value: Any) -> Prepared:
        start = time.perf_counter()
        feeds, geometry = model.prepare(value, channels)
        return feeds, geometry, (time.perf_counter() - start) * 1e3

    return prepare


def _stream(model: Model, values: Iterable[Any], prefetch: int, channels: str,
            answer: dict[str, Any]) -> Iterator[Prediction]:
    """One worker: inference on this thread with the model's own session (and telemetry by run())."""
    prepare = _preparing(model, channels)

    def finish(index: int, value: Any, prepared: Optional[Future[Prepared]]) -> Prediction:
        try:
            feeds, geometry, preprocess_ms = prepared.result() if isinstance(prepared, Future) else prepare(value)
            prediction = model.predict_tensors(feeds, geometry=geometry, **answer)
        except EdgepackError as exc:
            raise _naming_item(exc, index, value) from exc
        prediction.preprocess_ms = preprocess_ms
        return prediction

    if prefetch == 0:
        for index, value in enumerate(values):
            yield finish(index, value, None)
        return
    items = enumerate(values)  # read on this thread only: any iterator, a camera's included
    pending: deque[tuple[int, Any, Future[Prepared]]] = deque()
    pool = ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="edgepack-prepare")
    try:
        while True:
            while len(pending) <= prefetch:  # the current item and `prefetch` after it
                item: Optional[tuple[int, Any]] = next(items, None)
                if item is None:
                    break
                pending.append((*item, pool.submit(prepare, item[1])))
            if not pending:
                return
            index, value, prepared = pending.popleft()
            yield finish(index, value, prepared)
    finally:  # an error, the end, or the caller leaving early: no work left behind
        for *_, prepared in pending:
            prepared.cancel()
        pool.shutdown(wait=True)


@dataclass
class _Answered:
    """What a worker did with one item, for the caller's thread to record and hand out in order."""

    prediction: Optional[Prediction] = None
    error: Optional[Exception] = None
    # Once inference ran (or failed): its outcome for telemetry ("ok" or the error's class),
    # the inputs drift observes, and its latency.
    outcome: Optional[str] = None
    feeds: Optional[Mapping[str, np.ndarray]] = None
    latency_ms: Optional[float] = None


def _parallel_stream(model: Model, values: Iterable[Any], prefetch: int, workers: int, channels: str,
                     answer: dict[str, Any]) -> Iterator[Prediction]:
    """Several workers: each item prepared (on the prefetch pool, or by its worker with
    prefetch=0), then inferred and answered by whichever worker is free, on that worker's
    own session; the caller's thread records telemetry and yields, in input order."""
    prepare = _preparing(model, channels)
    idle: queue.SimpleQueue[Session] = queue.SimpleQueue()  # one session per worker thread, never shared
    for session in model._worker_sessions(workers):
        idle.put(session)

    def infer(value: Any, prepared: Optional[Future[Prepared]]) -> _Answered:
        done = _Answered()

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            start = time.perf_counter()
            try:
                outputs = model._backend_run(model.check_inputs(feeds), False, session)
            except Exception as exc:
                done.outcome, done.feeds = type(exc).__name__, feeds
                raise
            done.outcome, done.feeds, done.latency_ms = "ok", feeds, (time.perf_counter() - start) * 1e3
            return outputs

        session = idle.get()
        try:
            feeds, geometry, preprocess_ms = prepared.result() if prepared is not None else prepare(value)
            done.prediction = model.predict_tensors(feeds, run=run, geometry=geometry, **answer)
            done.prediction.preprocess_ms = preprocess_ms
        except Exception as exc:  # raised on the caller's thread, in its turn
            done.error = exc
        finally:
            idle.put(session)
        return done

    items = enumerate(values)  # read on this thread only: any iterator, a camera's included
    pending: deque[tuple[int, Any, Optional[Future[Prepared]], Future[_Answered]]] = deque()
    preparing = (ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="edgepack-prepare")
                 if prefetch else None)
    inferring = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgepack-infer")
    try:
        while True:
            while len(pending) < workers + prefetch:  # the items inferring and `prefetch` after them
                item: Optional[tuple[int, Any]] = next(items, None)
                if item is None:
                    break
                prepared = preparing.submit(prepare, item[1]) if preparing is not None else None
                pending.append((*item, prepared, inferring.submit(infer, item[1], prepared)))
            if not pending:
                return
            index, value, _, answered = pending.popleft()
            done = answered.result()
            if done.outcome is not None and done.feeds is not None:
                model._record_run(done.feeds, done.latency_ms, done.outcome)
            if isinstance(done.error, EdgepackError):
                raise _naming_item(done.error, index, value) from done.error
            if done.error is not None:
                raise done.error
            assert done.prediction is not None  # set whenever no error was
            yield done.prediction
    finally:  # an error, the end, or the caller leaving early: no work left behind
        for _, _, prepared, answered in pending:
            answered.cancel()
            if prepared is not None:
                prepared.cancel()  # a worker waiting on it gets CancelledError, and its item is dropped
        inferring.shutdown(wait=True)
        if preparing is not None:
            preparing.shutdown(wait=True)
