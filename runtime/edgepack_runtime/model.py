"""`load()` a bundle and `run()` it: the runtime's Python API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from .backends import Session, backend_available, open_session
from .bundle import Bundle, open_bundle
from .errors import BundleError, InputError
from .manifest import Artifact, TensorSpec

__all__ = ["Model", "load", "choose_artifact", "candidates", "default_threads", "AUTO"]

AUTO = "auto"  # artifact="auto": the fastest candidate, measured once per device (autoselect.py)


def candidates(bundle: Bundle) -> list[Artifact]:
    """Artifacts fit to run without the user naming one: built, passed validation,
    accuracy (where measured on a host matching the target) within the bundle's
    tolerance, and a backend for them installed here."""
    manifest = bundle.manifest

    def accurate(art: Artifact) -> bool:
        acc = art.accuracy
        return acc is None or acc.indicative or acc.drop <= manifest.accuracy_tolerance

    usable = [a for a in manifest.artifacts if a.usable and accurate(a)]
    found = [a for a in usable if backend_available(a.format)]
    if not found:
        if usable:
            raise BundleError(
                f"no backend installed for the validated artifacts ({', '.join(a.name for a in usable)}); "
                "install one, e.g. pip install 'edgepack-runtime[onnx,tflite]'"
            )
        raise BundleError(f"bundle {manifest.name!r} has no artifact that passed validation; rebuild it")
    return found


def choose_artifact(bundle: Bundle) -> Artifact:
    """The artifact used when none is named (documented in docs/bundle-format.md):
    among `candidates`, the first by the target's `prefer` precision order, ties broken
    by the target's `formats` order, then by manifest order."""
    target = bundle.manifest.target
    prefer = list(target.get("prefer", []))
    formats = list(target.get("formats", []))

    def rank(art: Artifact) -> tuple[int, int]:
        p = prefer.index(art.precision) if art.precision in prefer else len(prefer)
        f = formats.index(art.format) if art.format in formats else len(formats)
        return p, f

    return min(candidates(bundle), key=rank)


def default_threads(bundle: Bundle) -> int:
    """The target's thread count, but never more than this machine's cores."""
    wanted = int(bundle.manifest.target.get("threads", 1))
    return max(1, min(wanted, os.cpu_count() or 1))


class Model:
    """One artifact of a bundle, loaded and ready to run."""

    def __init__(self, bundle: Bundle, artifact: Artifact, session: Session):
        self.bundle = bundle
        self.artifact = artifact
        self._session = session
        self.inputs: tuple[TensorSpec, ...] = bundle.manifest.inputs
        self.outputs: tuple[TensorSpec, ...] = bundle.manifest.outputs
        # (dtype, shape) per input, for run() and run(raw=True): computed once, checked per call
        self._float_expected = self._expected(raw=False)
        self._raw_expected = self._expected(raw=True)

    @property
    def threads(self) -> int:
        return self._session.threads

    @property
    def backend(self) -> str:
        return f"{self._session.backend} {self._session.backend_version}"

    def provenance(self) -> dict:
        """What actually runs: backend, its version, delegate/provider and threads."""
        s = self._session
        return {"backend": s.backend, "backend_version": s.backend_version,
                "delegate": getattr(s, "delegate", None), "threads": s.threads}

    def _expected(self, raw: bool) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        native = self._session.native_dtypes() if raw else {}
        return {s.name: (native.get(s.name, np.dtype(s.dtype)), tuple(s.shape)) for s in self.inputs}

    def check_inputs(self, inputs: Mapping[str, np.ndarray], raw: bool = False) -> Mapping[str, np.ndarray]:
        """Raise InputError naming the input unless names, dtypes and shapes match exactly."""
        expected = self._raw_expected if raw else self._float_expected
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
        raise self._explain(inputs, expected, raw)

    def _explain(self, inputs, expected, raw: bool) -> InputError:
        """The clear error for inputs that failed the fast check."""
        missing = sorted(set(expected) - set(inputs))
        unknown = sorted(set(inputs) - set(expected))
        if missing or unknown:
            want = ", ".join(s.describe() for s in self.inputs)
            problem = f"missing input(s) {missing}" if missing else f"unknown input(s) {unknown}"
            return InputError(f"{problem}; this model takes {want}")
        for name, (dtype, shape) in expected.items():
            value = inputs[name]
            if not isinstance(value, np.ndarray):
                return InputError(f"input {name!r} must be a numpy array, got {type(value).__name__}")
            if value.dtype != dtype:
                return InputError(
                    f"input {name!r} has dtype {value.dtype}, expected {dtype}"
                    + ("; raw=True takes the artifact's own integer tensors" if raw else
                       f"; convert it with .astype(np.{dtype})")
                )
            if value.shape != shape:
                return InputError(
                    f"input {name!r} has shape {list(value.shape)}, expected {list(shape)}; "
                    "reshape it or rebuild the bundle for this shape"
                )
        return InputError(f"inputs {sorted(inputs)} do not match {sorted(expected)}")

    def run(self, inputs: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
        """Run one inference. Inputs and outputs are keyed by the manifest's tensor names.

        Takes and returns float arrays also for integer-quantized artifacts (scale and
        zero point applied here); `raw=True` passes the artifact's integer tensors through
        (see `native_dtypes()`), shapes stay the manifest's.
        """
        return self._session.run(self.check_inputs(inputs, raw), raw)

    def native_dtypes(self) -> dict[str, np.dtype]:
        """Input dtypes `run(raw=True)` expects where they differ from `inputs` (int8 TFLite)."""
        return self._session.native_dtypes()

    def quantization(self) -> dict[str, tuple[float, int]]:
        """(scale, zero_point) of each integer input/output tensor: real = (q - zero_point) * scale."""
        return self._session.quantization()

    def __repr__(self) -> str:
        return f"Model({self.bundle.manifest.name!r}, artifact={self.artifact.name!r}, threads={self.threads})"


def load(path: str | Path, artifact: Optional[str] = None, threads: Optional[int] = None) -> Model:
    """Open the bundle at `path`, check the chosen artifact's integrity and load it.

    `artifact` names one from the manifest; by default `choose_artifact` picks it;
    "auto" picks the fastest on this device (measured once, then cached, see autoselect).
    `threads` defaults to the target profile's thread count (capped at this machine's
    cores), or for "auto" to the thread count that won the trial.
    """
    bundle = open_bundle(path)
    if artifact == AUTO:
        from .autoselect import auto_choice

        choice = auto_choice(bundle)
        artifact, threads = choice["artifact"], threads or choice["threads"]
    chosen = bundle.manifest.artifact(artifact) if artifact else choose_artifact(bundle)
    file = bundle.verify_artifact(chosen)
    if threads is not None and threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    manifest = bundle.manifest
    session = open_session(chosen.format, file, threads or default_threads(bundle),
                           [s.name for s in manifest.inputs], [s.name for s in manifest.outputs], chosen.layout)
    return Model(bundle, chosen, session)
