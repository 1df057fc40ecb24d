"""`Model.predict_many`: a stream of raw inputs answered in order, the next items decoded
and preprocessed on a small thread pool while the current one infers.

Decoding (Pillow), the letterbox (OpenCV) and the backends (onnxruntime, LiteRT) release
the GIL, so on a multi-core device preprocessing item i+1 costs little time beside the
inference of item i. Inference and postprocessing stay on the caller's thread, one item at
a time and in input order: each answer is the one `Model.predict` gives, and telemetry,
drift and the backend see the same calls in the same order.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

import numpy as np

from .errors import EdgepackError, InputError

if TYPE_CHECKING:
    from .letterbox import Geometry
    from .model import Model
    from .postprocess import Prediction

    # An item's input tensors, its Geometry, and the milliseconds preprocessing took.
    Prepared = tuple[dict[str, np.ndarray], Optional[Geometry], float]

__all__ = ["PREFETCH", "predict_stream", "describe_item"]

# Items prepared ahead of the one inferring. Two hide preprocessing behind inference when
# one takes longer than the other now and then; memory stays that of three inputs and
# their tensors however long the stream is.
PREFETCH = 2
DESCRIBE_CHARS = 40  # of a text item, in an error message


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


def predict_stream(model: Model, values: Iterable[Any], prefetch: int, channels: str,
                   **answer: Any) -> Iterator[Prediction]:
    """Predictions for `values`, in order (see Model.predict_many). `answer`: top_k and the
    thresholds, checked by the caller. With prefetch=0, a plain loop on this thread."""
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise InputError(f"prefetch must be a whole number of items, 0 or more, not {str(prefetch)[:40]!r}")
    return _stream(model, values, prefetch, channels, answer)  # checked now, not at the first item


def _stream(model: Model, values: Iterable[Any], prefetch: int, channels: str,
            answer: dict[str, Any]) -> Iterator[Prediction]:
    def prepare(value: Any) -> Prepared:
        start = time.perf_counter()
        feeds, geometry = model.prepare(value, channels)
        return feeds, geometry, (time.perf_counter() - start) * 1e3

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
