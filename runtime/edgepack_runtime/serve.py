"""`edgepack-runtime serve`: a local inference endpoint on FastAPI + uvicorn (docs/serving.md).

Secure by default, with limits in the order nginx applies them: the Host header (a
tokenless server answers only to loopback names: no DNS rebinding), the token, the
content type (JSON or npz; images and text/plain when the bundle declares
preprocessing, and a text/plain body carrying a foreign Origin is refused: a web page may
send one without a CORS preflight), the body size (413 before reading when a length is sent, else as soon
as the chunks pass it) and the body time (408). Only then does a request take one of the
bounded inference slots (503 when full), so slow clients cannot hold them; npz members
are checked against the inputs' sizes before they are inflated, images' pixel counts
against the runtime's limit from their headers before they are decoded (413), and one
image is decoded at a time (memory stays bounded); every inference has a time limit (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import io
import json
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, Optional, Sequence, Union

import numpy as np
from fastapi import FastAPI, Request  # the `serve` extra; this module is imported only to serve
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import EdgepackError, InputError, InputTooLarge, first_line
from .manifest import TensorSpec
from .model import Model
from .postprocess import THRESHOLD_NAMES, Prediction, check_thresholds
from .prometheus import metric, sample

__all__ = ["create_app", "Live", "body_limit", "header_deadline_protocol", "JSON_BYTES_PER_ELEMENT", "BODY_SLACK_BYTES"]

JSON_BYTES_PER_ELEMENT = 32  # "-1.2345678901234567e-05, " is 25: a float as JSON text, with room
BODY_SLACK_BYTES = 64 * 1024  # JSON structure / npz headers
NPZ_TYPES = ("application/x-npz", "application/octet-stream")
BODY_TYPES = ("application/json",) + NPZ_TYPES
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")  # preprocess.IMAGE_FORMATS
TEXT_TYPES = ("text/plain",)
# An upload's bytes: a 40 MP JPEG (the decode limit) is rarely over 20 MB; a text needs far
# less than the tokenizer's character limit in UTF-8.
IMAGE_BODY_BYTES = 24 * 1024 * 1024
TEXT_BODY_BYTES = 4 * 100_000 + 1024
BODY_TIMEOUT_S = 10.0  # the whole body must arrive within this; a byte every few seconds does not
HEADER_TIMEOUT_S = 10.0  # and the request line + headers, from the connection (or last response) on
NPY_HEADER_BYTES = 4096  # an .npy member's header, beside its data
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
# /metrics labels requests by route, never by the raw path: bounded, and nothing to inject.
ROUTES = ("/v1/predict", "/v1/model", "/healthz", "/metrics", "/openapi.json", "/docs")
# Server-side request latency buckets for /metrics (seconds).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Headers = Sequence[tuple[bytes, bytes]]  # an ASGI response's extra headers
Answer = Union[Response, dict[str, Any]]  # what the /v1/predict route returns (FastAPI renders a dict as JSON)


def body_limit(model: Model) -> int:
    """Largest tensor request body accepted: every input element as JSON text, plus slack."""
    elements = sum(int(np.prod(s.largest_shape())) for s in model.inputs)
    return elements * JSON_BYTES_PER_ELEMENT + BODY_SLACK_BYTES


def body_limits(model: Model) -> dict[str, int]:
    """The content types this model's server accepts, each with its largest body."""
    limits = dict.fromkeys(BODY_TYPES, body_limit(model))
    kind = model.raw_input_kind()
    if kind == "image":
        limits.update(dict.fromkeys(IMAGE_TYPES, IMAGE_BODY_BYTES))
    elif kind == "text":
        limits.update(dict.fromkeys(TEXT_TYPES, TEXT_BODY_BYTES))
    return limits


class _Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        path = path if path in ROUTES else "other"
        with self.lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
            if path == "/v1/predict" and status == 200:
                i = next((i for i, b in enumerate(LATENCY_BUCKETS_S) if seconds <= b), len(LATENCY_BUCKETS_S))
                self.buckets[i] += 1
                self.latency_sum += seconds
                self.latency_count += 1

    def render(self, model: Model) -> str:
        lines = metric("edgepack_requests_total", "counter", "HTTP requests by path and status.")
        with self.lock:
            lines += [sample("edgepack_requests_total", n, path=path, status=status)
                      for (path, status), n in sorted(self.requests.items())]
            lines += metric("edgepack_predict_latency_seconds", "histogram",
                            "Successful /v1/predict latency, in the server.")
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS_S + (float("inf"),), self.buckets):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(sample("edgepack_predict_latency_seconds_bucket", cumulative, le=le))
            lines += [sample("edgepack_predict_latency_seconds_sum", f"{self.latency_sum:.6f}"),
                      sample("edgepack_predict_latency_seconds_count", self.latency_count)]
        lines += metric("edgepack_input_drift_psi", "gauge",
                        "PSI of recent inputs vs the calibration data (needs 30+ requests).")
        lines += [sample("edgepack_input_drift_psi", float(score), input=name)
                  for name, score in model.drift_scores().items() if score is not None]
        writer = model.telemetry
        lines += metric("edgepack_telemetry_dropped_total", "counter", "Telemetry records dropped by this server.")
        lines.append(sample("edgepack_telemetry_dropped_total", writer.dropped_total if writer else 0))
        return "\n".join(lines) + "\n"


class _Guard:
    """Pure ASGI middleware: token and body size are checked before the body is read."""

    def __init__(self, app: ASGIApp, token: Optional[str], limits: dict[str, int], metrics: _Metrics) -> None:
        self.app, self.token, self.limits, self.metrics = app, token, limits, metrics

    async def _reply(self, send: Send, status: int, detail: str, headers: Headers = ()) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *headers]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path = time.perf_counter(), scope["path"]
        headers = dict(scope["headers"])
        status_box = {"status": 500}

        async def send_and_count(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        kind = headers.get(b"content-type", b"application/json").decode("latin-1").split(";")[0].strip().lower()
        max_body = self.limits.get(kind, 0)
        try:
            refusal = self._refusal(path, scope["method"], headers, kind, max_body)
            if refusal is not None:
                return await self._reply(send_and_count, *refusal)
            try:
                body = await asyncio.wait_for(self._read_body(receive, max_body), BODY_TIMEOUT_S)
            except _TooLarge:
                return await self._reply(send_and_count, 413, f"body larger than this model's inputs need "
                                         f"({max_body} bytes at most)")
            except asyncio.TimeoutError:
                return await self._reply(send_and_count, 408,
                                         f"the body took longer than {BODY_TIMEOUT_S:g} s to arrive")
            replayed = False

            async def replay() -> Message:  # the app reads the body we already have, then waits for disconnect
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_and_count)
        finally:
            self.metrics.observe(path, status_box["status"], time.perf_counter() - start)

    def _refusal(self, path: str, method: str, headers: dict[bytes, bytes], kind: str,
                 max_body: int) -> Optional[tuple[int, str, Headers]]:
        """(status, detail, headers) for a request refused on its headers alone, else None."""
        if self.token is None:  # a tokenless server is loopback-only: so is its name
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in LOOPBACK_HOSTS:
                return 421, f"this server answers to localhost only, not Host {host[:60]!r}", ()
        if self.token is not None and path != "/healthz":
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return (401, "missing or wrong token: send 'Authorization: Bearer <token>'",
                        [(b"www-authenticate", b"Bearer")])
        if method == "POST":
            if kind not in self.limits:
                return 415, f"content type {kind[:60]!r} is not accepted; send {', '.join(self.limits)}", ()
            if kind in TEXT_TYPES and not _same_origin(headers):
                return 403, "a text/plain body from another origin (a web page) is refused", ()
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return 413, f"body larger than this model's inputs need ({max_body} bytes at most)", ()
        return None

    async def _read_body(self, receive: Receive, max_body: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:  # chunked bodies without a length: stop reading here
                raise _TooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _TooLarge(Exception):
    pass


def _same_origin(headers: dict[bytes, bytes]) -> bool:
    """No Origin (curl, scripts), or the server's own: browsers send Origin on every
    cross-origin POST, so a page elsewhere cannot post a text body here."""
    origin = headers.get(b"origin")
    if origin is None:
        return True
    host = origin.decode("latin-1").lower().split("://", 1)[-1]
    return host == headers.get(b"host", b"").decode("latin-1").lower()


def _decode_npz(body: bytes, model: Model) -> dict[str, np.ndarray]:
    """The npz's arrays, each member's inflated size checked (from its zip header, which
    also bounds what zipfile will inflate) before it is read: no zip bomb."""
    largest = max(int(np.prod(s.largest_shape())) * np.dtype(s.dtype).itemsize for s in model.inputs) + NPY_HEADER_BYTES
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = archive.infolist()
            if len(members) > len(model.inputs) or any(m.file_size > largest for m in members):
                raise InputError(f"npz holds more or larger arrays than this model's inputs "
                                 f"({len(model.inputs)} of at most {largest} bytes); send one array per input")
        with np.load(io.BytesIO(body), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"body is not a readable .npz ({exc}); send np.savez output") from exc


def _decode(body: bytes, content_type: str, model: Model) -> dict[str, np.ndarray]:
    if content_type in NPZ_TYPES:
        feeds = _decode_npz(body, model)
    else:
        try:
            payload = json.loads(body)
            raw = payload["inputs"]
            if not isinstance(raw, dict):
                raise TypeError("inputs must be an object")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise InputError(f'body must be JSON like {{"inputs": {{"name": [[...]]}}}} ({str(exc)[:200]})') from exc
        dtypes = {s.name: np.dtype(s.dtype) for s in model.inputs}
        try:
            # JSON has no dtypes: numbers take the input's dtype; names and shapes are checked by Model.run.
            feeds = {k: np.asarray(v, dtype=dtypes.get(k, np.float32)) for k, v in raw.items()}
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise InputError(f"input values must be nested lists of numbers ({str(exc)[:200]})") from exc
    for name, value in feeds.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise InputError(f"input {name!r} holds NaN or infinite values; send finite numbers")
    return feeds


def _thresholds(query: QueryParams, model: Model, raw: bool) -> dict[str, float]:
    """score_threshold / iou_threshold from the query string, for a detector's image upload
    (InputError, answered 400, on a value that is not one number in 0..1, on a bundle that
    does not detect, or on a tensor body, which has no image to map boxes onto)."""
    given: dict[str, float] = {}
    for name in THRESHOLD_NAMES:
        values = query.getlist(name)
        if len(values) > 1:
            raise InputError(f"{name} is given {len(values)} times; give it once")
        if values:
            try:
                given[name] = float(values[0])
            except ValueError:
                raise InputError(f"{name} must be a number from 0 to 1, not {values[0][:40]!r}") from None
    if given and not raw:
        raise InputError(f"{', '.join(given)} applies to image uploads; tensor bodies answer with the raw outputs")
    check_thresholds(model.bundle.manifest.postprocessing, **given)
    return given


def _threshold_parameters(model: Model) -> list[dict[str, Any]]:
    """The OpenAPI query parameters of /v1/predict: a detector's per-request thresholds."""
    post = model.bundle.manifest.postprocessing
    if post is None or post.detection is None:  # (the reader gives detections, and only them, their settings)
        return []
    defaults = {"score_threshold": post.detection.score_threshold, "iou_threshold": post.detection.iou_threshold}
    meaning = {"score_threshold": "keep boxes whose best class scores at least this",
               "iou_threshold": "drop a box overlapping a better one of its class by more than this IoU"}
    return [{"name": name, "in": "query", "required": False, "description": f"Image uploads: {meaning[name]}.",
             "schema": {"type": "number", "minimum": 0, "maximum": 1, "default": defaults[name]}}
            for name in THRESHOLD_NAMES]


def header_deadline_protocol() -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with nginx's client_header_timeout, which uvicorn lacks: a
    connection whose request line and headers are not all in HEADER_TIMEOUT_S after it
    opened (or after its last response) is closed, so clients trickling header bytes
    cannot pile up sockets. The body has its own deadline (BODY_TIMEOUT_S, 408)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        deadline: Optional[asyncio.TimerHandle] = None

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._expire)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expire(self) -> None:
            # Headers that never completed, or the rest of a body we already answered
            # (a 401/413/415/421/408 is sent before the body is read): close, as nginx.
            waiting = self.conn.their_state is h11.IDLE or self.conn.our_state is h11.DONE
            if waiting and not self.transport.is_closing():
                self.transport.close()

        # uvicorn's own H11Protocol takes an asyncio.Transport here, narrower than asyncio's
        # BaseProtocol declares; the same signature, and its ignore.
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self.conn.our_state is not h11.DONE:
                self._disarm()  # a new request's headers are in; its body has BODY_TIMEOUT_S

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline


def _tensor_schema(spec: TensorSpec) -> dict[str, Any]:
    """JSON schema of one input as nested lists: its shape (a dynamic dim's range), numbers
    its dtype holds."""
    schema: dict[str, Any]
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "b":
        schema = {"type": "boolean"}
    else:
        limits, kind = (np.finfo(dtype), float) if dtype.kind == "f" else (np.iinfo(dtype), int)
        schema = {"type": "number" if dtype.kind == "f" else "integer",
                  "minimum": kind(limits.min), "maximum": kind(limits.max)}
    ranges = {d.axis: (d.min, d.max) for d in spec.dynamic}
    for axis in reversed(range(len(spec.shape))):
        low, high = ranges.get(axis, (spec.shape[axis], spec.shape[axis]))
        schema = {"type": "array", "items": schema, "minItems": low, "maxItems": high}
    return schema


FOLLOW_INTERVAL_S = 1.0  # how often a followed `current` link is checked


class Live:
    """The model being served. With `follow`, a thread watches where a link (a bundle
    store's `current`) points; when it moves, the new version is loaded and warmed up off
    the request path, then swapped in by one assignment: requests already running finish
    on the version they started with, new ones get the new one, none fails."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.on_swap: list[Callable[[Model], None]] = []
        self._stop = threading.Event()

    def follow(self, link: Path, load_version: Callable[[Path], Model], log: Callable[[str], None],
               interval: float = FOLLOW_INTERVAL_S) -> None:
        def watch() -> None:
            refused = None  # a version that failed to load is not retried until the link moves again
            while not self._stop.wait(interval):
                try:
                    target = Path(link).resolve(strict=True)
                except OSError:
                    continue
                if target in (self.model.bundle.root, refused):
                    continue
                try:
                    new = load_version(target)
                    new.warm_up()
                except Exception as exc:  # never let the watcher die: the server would stop following
                    refused = target
                    why = first_line(exc) if not isinstance(exc, EdgepackError) else exc
                    log(f"not switching to {target.name}: {why}; still serving {self.model.bundle.root.name}")
                    continue
                self.model = new
                for callback in self.on_swap:
                    callback(new)
                log(f"now serving {new.bundle.manifest.name} {target.name} ({new.artifact.name})")

        threading.Thread(target=watch, name="edgepack-follow", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


class _Inference:
    """Runs predict requests on the live model: one inference at a time (LiteRT interpreters
    are not thread-safe; ORT gains nothing on a few cores), one image decoded at a time
    (memory stays one decode limit's worth, preprocess.MAX_IMAGE_PIXELS), at most
    `max_concurrency` requests in flight, each answered within `timeout_s`."""

    def __init__(self, live: Live, max_concurrency: int, timeout_s: float) -> None:
        self.live, self.max_concurrency, self.timeout_s = live, max_concurrency, timeout_s
        self.inflight = 0
        self._run_lock, self._decode_lock = threading.Lock(), threading.Lock()

    def run(self, model: Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._run_lock:
            return model.run(feeds)

    def predict(self, model: Model, body: bytes, content_type: str, thresholds: dict[str, float]) -> Prediction:
        """Preprocess, run, answer: a Prediction (a detector's boxes in the upload's pixels)."""
        start = time.perf_counter()
        if content_type in TEXT_TYPES:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("the text/plain body is not UTF-8") from None
            feeds, geometry = model.prepare(text)
        else:
            with self._decode_lock:
                feeds, geometry = model.prepare(body)
        ran = time.perf_counter()
        prediction = model.predict_tensors(feeds, run=lambda f: self.run(model, f), geometry=geometry,
                                           score_threshold=thresholds.get("score_threshold"),
                                           iou_threshold=thresholds.get("iou_threshold"))
        prediction.preprocess_ms = (ran - start) * 1e3
        return prediction

    async def handle(self, request: Request) -> Answer:
        model = self.live.model  # this request runs on this version to its end, whatever is swapped in meanwhile
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        raw = content_type in IMAGE_TYPES + TEXT_TYPES
        kind = model.raw_input_kind()
        wanted = () if kind is None else {"image": IMAGE_TYPES, "text": TEXT_TYPES}.get(kind, ())
        if raw and content_type not in wanted:  # the version swapped in since the guard looked takes other input
            return JSONResponse({"detail": f"this bundle version does not take {content_type}"}, status_code=415)
        try:
            thresholds = _thresholds(request.query_params, model, raw)
        except InputError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        body = await request.body()
        try:  # the guard has read the whole body already: decoding tensors takes no slot
            feeds = None if raw else _decode(body, content_type, model)
        except InputError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        if self.inflight >= self.max_concurrency:
            return JSONResponse({"detail": f"busy: {self.max_concurrency} requests in flight, retry shortly"},
                                status_code=503, headers={"Retry-After": "1"})
        self.inflight += 1
        released = False
        try:
            # Raw inputs are decoded inside the slot: decoding an image is work to bound too.
            work = (self.predict, model, body, content_type, thresholds) if raw else (self.run, model, feeds)
            task = asyncio.ensure_future(run_in_threadpool(*work))
            try:
                result = await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
            except asyncio.TimeoutError:
                # The inference keeps its slot until it really ends: concurrency stays bounded.
                task.add_done_callback(lambda _: setattr(self, "inflight", self.inflight - 1))
                released = True
                return JSONResponse({"detail": f"inference took longer than {self.timeout_s:g} s"}, status_code=504)
            except InputError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=413 if isinstance(exc, InputTooLarge) else 422)
            except EdgepackError as exc:  # the backend failed on this input: say so, keep serving
                return JSONResponse({"detail": str(exc)}, status_code=500)
            return _answer(request, model, result)
        finally:
            if not released:
                self.inflight -= 1


def _answer(request: Request, model: Model, result: Union[Prediction, dict[str, np.ndarray]]) -> Answer:
    """A finished inference as the response: JSON (a raw input's answer, or the outputs as
    lists) or, when asked for, the outputs as an .npz."""
    outputs = result.outputs if isinstance(result, Prediction) else result
    if any(v.dtype.kind == "f" and not np.all(np.isfinite(v)) for v in outputs.values()):
        return JSONResponse({"detail": "the model produced NaN or infinite outputs for this input"}, status_code=422)
    if request.headers.get("accept", "").startswith("application/x-npz"):
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=True, **outputs)  # numpy's default, named: no output is taken for it
        return Response(buffer.getvalue(), media_type="application/x-npz")
    if isinstance(result, Prediction):  # a raw input's answer
        return {"artifact": model.artifact.name, **result.to_dict()}
    return {"artifact": model.artifact.name, "outputs": {k: v.tolist() for k, v in outputs.items()}}


def _predict_openapi(model: Model) -> dict[str, Any]:
    """The OpenAPI description of /v1/predict's parameters and bodies for `model`."""
    names = [s.name for s in model.inputs]
    parameters = _threshold_parameters(model)
    limits = body_limits(model)
    return {**({"parameters": parameters} if parameters else {}), "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {"inputs": {
            "type": "object", "required": names, "additionalProperties": False,
            "properties": {s.name: _tensor_schema(s) for s in model.inputs}}}}},
        "application/x-npz": {"schema": {"type": "string", "format": "binary"}},
        **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in limits if kind in IMAGE_TYPES},
        **{kind: {"schema": {"type": "string", "maxLength": TEXT_BODY_BYTES // 4}} for kind in limits
           if kind in TEXT_TYPES},
    }}}


def _add_info_routes(app: FastAPI, live: Live, metrics: "_Metrics") -> None:
    """/healthz, /v1/model (what is served) and /metrics (Prometheus)."""

    # response_model=None: the OpenAPI schema stays the untyped one it has always been.
    @app.get("/healthz", response_model=None)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", response_model=None)
    def describe() -> dict[str, Any]:
        model = live.model
        return {"bundle": model.bundle.manifest.name, "bundle_sha256": model.bundle.sha256,
                "target": model.bundle.manifest.target.get("id"), "artifact": model.artifact.name,
                "inputs": [dataclasses.asdict(s) for s in model.inputs],
                "outputs": [dataclasses.asdict(s) for s in model.outputs],
                **model.provenance()}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(live.model), media_type="text/plain; version=0.0.4")


def create_app(served: Union[Model, Live], token: Optional[str] = None, max_concurrency: int = 8,
               timeout_s: float = 10.0) -> tuple[_Guard, FastAPI]:
    """The ASGI app serving a Model, or a Live one that may be swapped; and the FastAPI app inside it."""
    live = served if isinstance(served, Live) else Live(served)
    model = live.model  # the first version: the API description and OpenAPI schema are its
    metrics = _Metrics()
    inference = _Inference(live, max_concurrency, timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        live.stop()
        if live.model.telemetry is not None:  # shutdown: commit what is queued before exiting
            live.model.telemetry.flush()

    app = FastAPI(title="edgepack-runtime", version="1", lifespan=lifespan,
                  description=f"Inference for bundle {model.bundle.manifest.name}")
    _add_info_routes(app, live, metrics)

    @app.post("/v1/predict", openapi_extra=_predict_openapi(model), response_model=None)
    async def predict(request: Request) -> Answer:
        return await inference.handle(request)

    guard = _Guard(app, token, body_limits(model), metrics)
    live.on_swap.append(lambda new: setattr(guard, "limits", body_limits(new)))
    return guard, app
