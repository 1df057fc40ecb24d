"""`load()` a bundle and `run()` it: the runtime's Python API."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, Union

import numpy as np

from .backends import Session, backend_available, open_session
from .bundle import Bundle, open_bundle
from .dims import dim_sizes
from .errors import BundleError, EdgepackError, InferenceError, InputError, first_line
from .manifest import Artifact, Latency, Manifest, Preprocessing, TensorSpec
from .precision import is_integer
from .stream import PREFETCH

if TYPE_CHECKING:  # imported where used: drift, images and texts are optional at run time
    from .drift import DriftMonitor
    from .letterbox import Geometry
    from .postprocess import Prediction
    from .preprocess import ImagePipeline, TextPipeline
    from .telemetry import TelemetryWriter

Expected = dict[str, tuple[np.dtype, tuple[int, ...]]]  # (dtype, shape) per input
RunFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]

__all__ = ["Model", "load", "choose_artifact", "default_reason", "candidates", "default_threads", "AUTO"]

AUTO = "auto"  # artifact="auto": the fastest candidate, measured once per device (autoselect.py)


def _fit_for_default(art: Artifact, manifest: Manifest) -> bool:
    """Accurate enough to run without the user naming it. Schema-1 bundles: top-1 within the
    tolerance unless indicative. Since schema 2: within the accuracy budget, and for integer
    kernels measured on the target's ISA: an indicative figure is never the silent default."""
    acc = art.accuracy
    if acc is None:
        return True
    if acc.cosine is None:
        drop = acc.drop  # None without labels: no top-1 to judge, as with no figures at all
        return acc.indicative or drop is None or drop <= manifest.accuracy_tolerance
    if acc.within_budget is False:
        return False
    return not (acc.indicative and is_integer(art.precision))


def candidates(bundle: Bundle) -> list[Artifact]:
    """Artifacts fit to run without the user naming one: built, passed validation,
    accurate enough (`_fit_for_default`), and a backend for them installed here."""
    manifest = bundle.manifest
    usable = [a for a in manifest.artifacts if a.usable and _fit_for_default(a, manifest)]
    found = [a for a in usable if backend_available(a.format)]
    if not found:
        if usable:
            raise BundleError(
                f"no backend installed for the validated artifacts ({', '.join(a.name for a in usable)}); "
                "install one, e.g. pip install 'edgepack-runtime[onnx,tflite]'"
            )
        raise BundleError(f"bundle {manifest.name!r} has no artifact that passed validation and its accuracy "
                          "checks on the target; name one with artifact=..., or rebuild it")
    return found


def _measured(found: list[Artifact]) -> Optional[list[Latency]]:
    """Each artifact's build-time latency when the build host ran every one's kernels as the
    target will; otherwise None."""
    latencies = [a.latency for a in found if a.latency is not None and a.latency.matches_target]
    return latencies if len(latencies) == len(found) else None


def default_reason(bundle: Bundle) -> str:
    """What `choose_artifact` rests on, in words (for `info`)."""
    latencies = _measured(candidates(bundle))
    if latencies is not None:
        host = latencies[0].host
        return f"fastest accurate artifact, measured when the bundle was built ({host})"
    return ("the target profile's precision order (no build-time latency on the target's kernels); "
            "artifact=\"auto\" measures on this device")


def choose_artifact(bundle: Bundle) -> Artifact:
    """The artifact used when none is named (documented in docs/bundle-format.md): among
    `candidates`, the fastest by the latency measured at build time when the build host ran
    every candidate's kernels as the target will; otherwise the first by the target's
    `prefer` precision order, ties broken by its `formats` order, then by manifest order."""
    found = candidates(bundle)
    latencies = _measured(found)
    if latencies is not None:
        return min(zip(found, latencies), key=lambda pair: pair[1].p50_ms)[0]
    target = bundle.manifest.target
    prefer = list(target.get("prefer", []))
    formats = list(target.get("formats", []))

    def rank(art: Artifact) -> tuple[int, int]:
        p = prefer.index(art.precision) if art.precision in prefer else len(prefer)
        f = formats.index(art.format) if art.format in formats else len(formats)
        return p, f

    return min(found, key=rank)


def default_threads(bundle: Bundle) -> int:
    """The target's thread count, but never more than this machine's cores."""
    wanted = int(bundle.manifest.target.get("threads", 1))
    return max(1, min(wanted, os.cpu_count() or 1))


DRIFT_SCORE_EVERY = 100  # inferences between drift scores written to telemetry
log = logging.getLogger("edgepack_runtime.drift")


def _drift_monitor(bundle: Bundle) -> Optional[DriftMonitor]:
    """The drift monitor of a bundle's drift reference, or None with one warning when the
    reference is damaged: checked here, at load, never at run."""
    from .drift import DriftMonitor, check_reference

    shapes = {s.name: s.shape for s in bundle.manifest.inputs}
    reference = bundle.manifest.drift_reference
    why = check_reference(reference, shapes)
    if why is None and reference is not None:  # (check_reference refuses None)
        try:
            return DriftMonitor(reference, shapes)
        except Exception as exc:  # what check_reference did not foresee still only disables drift
            why = first_line(exc, 120)
    log.warning("input drift is off for bundle %r: its drift reference cannot be used (%s); inference and "
                "telemetry go on, rebuild the bundle to restore drift", str(bundle.manifest.name)[:60], why)
    return None


class Model:
    """One artifact of a bundle, loaded and ready to run."""

    def __init__(self, bundle: Bundle, artifact: Artifact, session: Session,
                 telemetry: Optional[TelemetryWriter] = None) -> None:
        self.bundle = bundle
        self.artifact = artifact
        self._session: Optional[Session] = session  # None once closed
        # predict_many's workers: one session each, opened on the first stream that has
        # several workers and kept until close() (their threads per worker, the sessions).
        self._workers_open: tuple[tuple[int, ...], list[Session]] = ((), [])
        self.telemetry = telemetry  # the TelemetryWriter recording this model's inferences, or None
        self._drift: Optional[DriftMonitor] = None
        if telemetry is not None and bundle.manifest.drift_reference:
            self._drift = _drift_monitor(bundle)
        self._runs = 0
        # How telemetry names the bundle: readable, and unique per build.
        self.telemetry_label = f"{bundle.manifest.name}@{bundle.sha256[:12]}"
        self.inputs: tuple[TensorSpec, ...] = bundle.manifest.inputs
        self.outputs: tuple[TensorSpec, ...] = bundle.manifest.outputs
        # (dtype, shape) per input, for run() and run(raw=True): computed once, checked per call
        self._float_expected = self._expected(raw=False)
        self._raw_expected = self._expected(raw=True)
        # predict(): the image or text pipeline, made on first use
        self._pipeline: Optional[Union[ImagePipeline, TextPipeline]] = None
        self._labels: Optional[list[str]] = None

    @property
    def _open(self) -> Session:
        """The backend session; InferenceError once the model is closed."""
        if self._session is None:
            raise InferenceError(f"{self.artifact.name} was closed; load the bundle again to run it")
        return self._session

    @property
    def threads(self) -> int:
        return self._open.threads

    @property
    def backend(self) -> str:
        return f"{self._open.backend} {self._open.backend_version}"

    def provenance(self) -> dict[str, Any]:
        """What actually runs: backend, its version, delegate/provider and threads."""
        s = self._open
        return {"backend": s.backend, "backend_version": s.backend_version,
                "delegate": getattr(s, "delegate", None), "threads": s.threads}

    def _expected(self, raw: bool) -> Expected:
        native = self._open.native_dtypes() if raw else {}
        return {s.name: (native.get(s.name, np.dtype(s.dtype)), tuple(s.shape)) for s in self.inputs}

    def check_inputs(self, inputs: Mapping[str, np.ndarray], raw: bool = False) -> Mapping[str, np.ndarray]:
        """Raise InputError naming the input unless names, dtypes and shapes match exactly."""
        expected = self._raw_expected if raw else self._float_expected
        if not isinstance(inputs, Mapping):
            raise InputError(f"inputs must be a dict of input name to numpy array, not {type(inputs).__name__}")
        # Fast path, on every inference: a handful of attribute compares (see benchmarks/overhead.py).
        if len(inputs) == len(expected):
            try:
                for name, (dtype, shape) in expected.items():
                    value = inputs[name]
                    if value.shape != shape or (value.dtype is not dtype and value.dtype != dtype):
                        break
                else:
                    return inputs
            except (KeyError, AttributeError):
                pass
        error = self._explain(inputs, expected, raw)
        if error is not None:
            raise error
        return inputs

    def _explain(self, inputs: Mapping[str, Any], expected: Expected, raw: bool) -> Optional[InputError]:
        """The clear error for inputs that failed the fast check; None when they are fine
        (sizes of dynamic dims other than the one the bundle was built at)."""
        missing = sorted(set(expected) - set(inputs))
        unknown = sorted(set(inputs) - set(expected))
        if missing or unknown:
            want = ", ".join(s.describe() for s in self.inputs)
            problem = f"missing input(s) {missing}" if missing else f"unknown input(s) {unknown}"
            return InputError(f"{problem}; this model takes {want}")
        for name, (dtype, _) in expected.items():
            value = inputs[name]
            if not isinstance(value, np.ndarray):
                return InputError(f"input {name!r} must be a numpy array, got {type(value).__name__}")
            if value.dtype != dtype:
                return InputError(
                    f"input {name!r} has dtype {value.dtype}, expected {dtype}"
                    + ("; raw=True takes the artifact's own integer tensors" if raw else
                       f"; convert it with .astype(np.{dtype})")
                )
        if not any(s.dynamic for s in self.inputs):
            for name, (_, shape) in expected.items():
                if inputs[name].shape != shape:
                    return InputError(f"input {name!r} has shape {list(inputs[name].shape)}, expected "
                                      f"{list(shape)}; reshape it or rebuild the bundle for this shape")
        try:
            dim_sizes(self.inputs, {name: value.shape for name, value in inputs.items()})
        except ValueError as exc:
            return InputError(f"input {exc}; fit the input or rebuild the bundle with a wider --input range")
        return None

    def run(self, inputs: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
        """Run one inference. Inputs and outputs are keyed by the manifest's tensor names.

        Takes and returns float arrays also for integer-quantized artifacts (scale and
        zero point applied here); `raw=True` passes the artifact's integer tensors through
        (see `native_dtypes()`), shapes stay the manifest's.
        """
        if self.telemetry is None:
            return self._backend_run(self.check_inputs(inputs, raw), raw)
        return self._run_recorded(inputs, raw)

    def raw_input_kind(self) -> Optional[str]:
        """"image" or "text": what `predict` takes; None when the bundle takes tensors only."""
        pre = self.bundle.manifest.preprocessing
        return None if pre is None else pre.kind

    def preprocess(self, value: Any, channels: str = "rgb") -> dict[str, np.ndarray]:
        """The input tensors for a raw input, as the bundle declares (docs/raw-inputs.md): an
        image (a path, encoded bytes, a PIL image, or a uint8 HxWxC array whose colour order
        `channels` gives: "bgr" for OpenCV frames), or a text."""
        return self.prepare(value, channels)[0]

    def prepare(self, value: Any, channels: str = "rgb") -> tuple[dict[str, np.ndarray], Optional[Geometry]]:
        """`preprocess`, and for an image its Geometry: where the model input's pixels lie in
        the original image (`geometry.to_original(boxes)` maps boxes back); None for a text."""
        _, made = self._preprocessing()
        from .preprocess import ImagePipeline  # loaded by now: _preprocessing made the pipeline

        if isinstance(made, ImagePipeline):  # the bundle declares image steps
            tensor, geometry = made.prepare(value, channels)
            return {made.steps.input: tensor}, geometry
        return made(value), None

    def _preprocessing(self) -> tuple[Preprocessing, Union[ImagePipeline, TextPipeline]]:
        """The bundle's declared preprocessing and its pipeline, made once; InputError without one."""
        pre = self.bundle.manifest.preprocessing
        if pre is None:
            raise InputError(f"bundle {self.bundle.manifest.name!r} declares no preprocessing, so it takes tensors: "
                             "use run(), or rebuild with --preprocess / --tokenizer")
        if self._pipeline is None:
            from .preprocess import pipeline

            self._pipeline = pipeline(self.bundle)
        return pre, self._pipeline

    def predict(self, value: Any, top_k: Optional[int] = None, channels: str = "rgb",
                score_threshold: Optional[float] = None, iou_threshold: Optional[float] = None) -> Prediction:
        """Preprocess a raw input (see `preprocess`), run it, and answer as the bundle
        declares: a Prediction with the top-k (label, score) of a classifier, an embedding,
        or a detector's boxes in the original image's pixels (`score_threshold` and
        `iou_threshold`, each 0..1, override the bundle's for this call), and every output.
        Telemetry and drift see the preprocessed tensors, as with run()."""
        from .postprocess import check_thresholds

        check_thresholds(self.bundle.manifest.postprocessing, score_threshold=score_threshold,
                         iou_threshold=iou_threshold)  # before the work, not after it
        start = time.perf_counter()
        feeds, geometry = self.prepare(value, channels)
        preprocessed = time.perf_counter()
        prediction = self.predict_tensors(feeds, top_k, geometry=geometry, score_threshold=score_threshold,
                                          iou_threshold=iou_threshold)
        prediction.preprocess_ms = (preprocessed - start) * 1e3
        return prediction

    def predict_many(self, values: Iterable[Any], top_k: Optional[int] = None, channels: str = "rgb",
                     score_threshold: Optional[float] = None, iou_threshold: Optional[float] = None, *,
                     prefetch: int = PREFETCH, workers: Optional[int] = None) -> Iterator[Prediction]:
        """`predict` over a stream of raw inputs (any iterable, read lazily: a folder's paths,
        a camera's frames), yielding each Prediction in input order, the same as a loop of
        `predict` calls. The next `prefetch` items are decoded and preprocessed on as many
        threads while the current ones infer (prefetch=0: by the worker inferring them).

        `workers` items infer at once, each worker on a backend session of its own with a share
        of the model's threads (2 threads, 2 workers: 1 thread each; small layers scale badly
        over threads, two 1-thread inferences do not wait on each other). Default: 2 when the
        model has 2 threads or more, else 1 (`stream.default_workers`). Memory: each worker's
        session holds the model's weights again and activations of its own, and stays open
        until `close()`: 2 workers of the YOLO example's 640x640 detector take 100-200 MB more
        than `predict` (README, "Streams"); `workers=1` opens none and infers on this thread
        with the model's own session. Answers are the same whichever session runs them (the
        backends split a layer's outputs between threads, not the sums that make each one).
        Telemetry and drift record each answered item once, in input order.

        An error on an item stops the stream with the error's own class, its message led by
        "item N"."""
        from .postprocess import check_thresholds
        from .stream import predict_stream

        check_thresholds(self.bundle.manifest.postprocessing, score_threshold=score_threshold,
                         iou_threshold=iou_threshold)
        self._preprocessing()  # here, not on the pool's threads, and before the first item is read
        self._answer_labels()  # once, before any worker answers
        return predict_stream(self, values, prefetch, workers, channels, top_k=top_k,
                              score_threshold=score_threshold, iou_threshold=iou_threshold)

    def _worker_sessions(self, workers: int) -> list[Session]:
        """predict_many's `workers` backend sessions, the model's threads split between them
        (5 threads, 2 workers: 3 and 2). Opened on first use (the artifact's files hashed
        again: what runs is what was verified), kept until close() or a stream with another
        number of workers."""
        shares = tuple(self.threads // workers + (i < self.threads % workers) for i in range(workers))
        if self._workers_open[0] != shares:
            self._workers_open = ((), [])  # the old ones go before the new ones take memory
            file = self.bundle.verify_artifact(self.artifact)
            manifest = self.bundle.manifest
            opened = [open_session(self.artifact.format, file, n, manifest.inputs, manifest.outputs,
                                   self.artifact.layout) for n in shares]
            self._workers_open = (shares, opened)
        return self._workers_open[1]

    def predict_tensors(self, feeds: Mapping[str, np.ndarray], top_k: Optional[int] = None,
                        run: Optional[RunFn] = None, *, geometry: Optional[Geometry] = None,
                        score_threshold: Optional[float] = None,
                        iou_threshold: Optional[float] = None) -> Prediction:
        """`predict` from preprocessed tensors: run them (through `run`, default `self.run`)
        and answer as the bundle declares. A detector's boxes are mapped back to the original
        image through `geometry` (from `prepare`); without it they stay in input pixels."""
        from .postprocess import answer, check_thresholds
        from .tasks import Ask

        post = self.bundle.manifest.postprocessing
        check_thresholds(post, score_threshold=score_threshold, iou_threshold=iou_threshold)
        labels = self._answer_labels()
        start = time.perf_counter()
        outputs = (run or self.run)(feeds)
        ran = time.perf_counter()
        ask = Ask(top_k=top_k, score_threshold=score_threshold, iou_threshold=iou_threshold, geometry=geometry,
                  input_hw=self._input_hw(feeds) if geometry is not None else None)
        prediction = answer(post, outputs, labels, ask)
        prediction.inference_ms = (ran - start) * 1e3
        prediction.postprocess_ms = (time.perf_counter() - ran) * 1e3
        return prediction

    def _answer_labels(self) -> Optional[list[str]]:
        """The labels the answers name (read and checked once), or None."""
        from .postprocess import label_count, read_labels

        post = self.bundle.manifest.postprocessing
        if self._labels is None and post is not None and post.labels is not None:
            spec = {s.name: s for s in self.outputs}[post.output]
            self._labels = read_labels(self.bundle.read_data_file(post.labels), label_count(post, spec))
        return self._labels

    def _input_hw(self, feeds: Mapping[str, np.ndarray]) -> Optional[tuple[int, int]]:
        """The image input's height and width in `feeds` (where a mask's pixels lie)."""
        pre = self.bundle.manifest.preprocessing
        if pre is None or pre.image is None:
            return None
        shape = feeds[pre.image.input].shape
        height, width = shape[1:3] if pre.image.layout == "nhwc" else shape[-2:]
        return int(height), int(width)

    def warm_up(self) -> None:
        """One inference on the bundle's first golden input, not recorded: proves the artifact
        runs on this machine (raises InferenceError if not) and warms the backend's caches."""
        inputs, _ = self.bundle.golden()
        self._backend_run(self.check_inputs({k: v[0] for k, v in inputs.items()}), raw=False)

    def close(self) -> None:
        """Release the backend session (its memory and threads) and commit the telemetry this
        process has queued. Also on leaving a `with load(...) as model:` block."""
        if self.telemetry is not None:
            self.telemetry.flush()
        self._session = None
        self._workers_open = ((), [])

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _backend_run(self, feeds: Mapping[str, np.ndarray], raw: bool,
                     session: Optional[Session] = None) -> dict[str, np.ndarray]:
        """`feeds` (checked) through `session` (default the model's own)."""
        session = session or self._open
        try:
            return session.run(feeds, raw)
        except EdgepackError:
            raise
        except Exception as exc:  # the backend's own errors, one typed error for every caller
            raise InferenceError(
                f"{self.backend} failed running {self.artifact.name}: {first_line(exc)}; "
                "the file may be damaged: run `edgepack-runtime verify` and rebuild the bundle if it fails"
            ) from exc

    def _run_recorded(self, inputs: Mapping[str, np.ndarray], raw: bool) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        try:
            outputs = self._backend_run(self.check_inputs(inputs, raw), raw)
        except Exception as exc:
            self._record_run(inputs, None, type(exc).__name__, raw)
            raise
        self._record_run(inputs, (time.perf_counter() - start) * 1e3, "ok", raw)
        return outputs

    def _record_run(self, inputs: Mapping[str, np.ndarray], latency_ms: Optional[float], outcome: str,
                   raw: bool = False) -> None:
        """Telemetry (and drift, for an "ok" run on float inputs) of one inference: run()'s,
        or one a predict_many worker ran, recorded in input order on the stream's thread."""
        telemetry = self.telemetry
        if telemetry is None:
            return
        telemetry.record(self.telemetry_label, self.artifact.name, latency_ms, outcome)
        if self._drift is not None and not raw and outcome == "ok":
            try:
                self._drift.observe(inputs)
                self._runs += 1
                if self._runs % DRIFT_SCORE_EVERY == 0:
                    telemetry.record_drift(self.telemetry_label, self._drift.scores())
            except Exception as exc:  # telemetry never costs an inference: drift stops, the answer goes out
                log.warning("input drift is off for %s: it failed on an input (%s)", self.telemetry_label,
                            first_line(exc, 120))
                self._drift = None

    def drift_scores(self) -> dict[str, Optional[float]]:
        """PSI per input over recent inferences (telemetry on and a drift reference in the bundle)."""
        return self._drift.scores() if self._drift is not None else {}

    def native_dtypes(self) -> dict[str, np.dtype]:
        """Input dtypes `run(raw=True)` expects where they differ from `inputs` (int8 TFLite)."""
        return self._open.native_dtypes()

    def quantization(self) -> dict[str, tuple[float, int]]:
        """(scale, zero_point) of each integer input/output tensor: real = (q - zero_point) * scale."""
        return self._open.quantization()

    def __repr__(self) -> str:
        return f"Model({self.bundle.manifest.name!r}, artifact={self.artifact.name!r}, threads={self.threads})"


def load(path: str | Path | Bundle, artifact: Optional[str] = None, threads: Optional[int] = None,
         telemetry: Optional[bool] = None, *, verified: bool = False) -> Model:
    """Open the bundle at `path` (or take an open Bundle), check the chosen artifact's
    integrity and load it. `verified=True`: the caller has just checked the bundle's files
    and signature (verify_bundle), which are then not hashed again.

    `artifact` names one from the manifest; by default `choose_artifact` picks it;
    "auto" picks the fastest on this device (measured once, then cached, see autoselect).
    `threads` defaults to the target profile's thread count (capped at this machine's
    cores), or for "auto" to the thread count that won the trial.
    A bundle that carries a signature is checked against the device's trusted keys, and
    an unsigned one refused when the trust policy requires signatures (signature.py).
    `telemetry=True` records every inference locally (docs/telemetry.md); off by default
    here, on by default in the CLI and server; EDGEPACK_TELEMETRY=0 turns it off everywhere.
    """
    bundle = path if isinstance(path, Bundle) else open_bundle(path)
    from .signature import check_signature

    if not verified:
        check_signature(bundle)  # the device's trust policy: a signed bundle verifies under a trusted key
    if artifact == AUTO:
        from .autoselect import auto_choice

        choice = auto_choice(bundle)
        artifact, threads = choice.artifact, threads or choice.threads
    chosen = bundle.manifest.artifact(artifact) if artifact else choose_artifact(bundle)
    file = bundle.verify_artifact(chosen, hashed=not verified)
    if threads is not None and threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    manifest = bundle.manifest
    session = open_session(chosen.format, file, threads or default_threads(bundle),
                           manifest.inputs, manifest.outputs, chosen.layout)
    writer = None
    if telemetry:
        from .telemetry import enabled_by_env, shared_writer

        writer = shared_writer() if enabled_by_env() else None
    return Model(bundle, chosen, session, writer)
