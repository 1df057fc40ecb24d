"""Inference backends, one module per artifact format, imported only when needed.

A backend is a module with `open_session(path, threads, input_names, output_names) ->
Session` and `available() -> bool`, registered under its format's name: the built-ins
here, plugins through the entry point group `edgepack_runtime.backends` or in-process with
`register_backend` (docs/extending.md). The built-ins are listed in code, not as entry
points, so a runtime run from its source tree (the emulated device) still has them."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Mapping, Optional, Protocol, Sequence, cast

import numpy as np

from ..dims import crop, dim_sizes, pad
from ..errors import BackendUnavailableError, BundleError, InputError, mapped
from ..manifest import TensorSpec
from ..registry import Registry

__all__ = ["Session", "SESSION_API", "open_session", "backend_available", "backends", "register_backend", "to_nhwc",
           "NHWC", "ENTRY_POINTS"]

ENTRY_POINTS = "edgepack_runtime.backends"
NHWC = "nhwc"
# format name -> importable module name (imported when an artifact of that format is opened)
_registry: Registry[str] = Registry("backend", ENTRY_POINTS, {
    "onnx": f"{__name__}.onnx", "tflite": f"{__name__}.tflite", "ncnn": f"{__name__}.ncnn"})


def register_backend(fmt: str, module: str) -> None:
    """Run artifacts of format `fmt` with the module named `module` (imported when needed)."""
    _registry.register(fmt, module)


def backends() -> dict[str, str]:
    """Every registered backend: format name -> module name."""
    return _registry.all()


# The Session protocol's version: a backend module says which it implements (SESSION_API,
# default this one); one this runtime cannot run is refused with one line, not a traceback.
SESSION_API = 1
SUPPORTED_SESSION_APIS = (1,)
SESSION_MEMBERS = ("backend", "backend_version", "threads", "native_dtypes", "quantization", "run", "fixed_shapes")


class Session(Protocol):
    """A loaded artifact ready to run. Feeds and results are keyed by the manifest's names."""

    backend: str  # e.g. "onnxruntime"
    backend_version: str
    threads: int

    def native_dtypes(self) -> dict[str, np.dtype]:
        """Inputs whose dtype under raw=True differs from the manifest's (int8 TFLite)."""

    def quantization(self) -> dict[str, tuple[float, int]]:
        """(scale, zero_point) of every integer input and output tensor, by manifest name."""

    def run(self, feeds: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]: ...

    def fixed_shapes(self) -> Optional[list[dict[str, tuple[int, ...]]]]:
        """Input shapes of an artifact built for a few fixed sizes (smallest first), else None."""


def _module(fmt: str) -> ModuleType:
    known = backends()
    if fmt not in known:
        raise BundleError(
            f"artifact format {fmt!r} is not supported by this edgepack-runtime "
            f"(supported: {', '.join(sorted(known))}); upgrade edgepack-runtime or install the plugin for it"
        )
    with mapped(BackendUnavailableError, f"the {fmt} backend {known[fmt]} cannot be imported",
                "reinstall or upgrade it"):
        module = importlib.import_module(known[fmt])
    api = getattr(module, "SESSION_API", SESSION_API)
    missing = [f for f in ("available", "open_session") if not callable(getattr(module, f, None))]
    if api not in SUPPORTED_SESSION_APIS or missing:
        why = f"lacks {', '.join(missing)}()" if missing else f"implements Session protocol {api}"
        raise BackendUnavailableError(f"the {fmt} backend {known[fmt]} {why}; this edgepack-runtime runs protocol "
                                      f"{SESSION_API}: upgrade the plugin (docs/extending.md)")
    return module


def _checked(fmt: str, session: object) -> Session:
    """A backend's session, with the protocol's members present (one line if not)."""
    missing = [m for m in SESSION_MEMBERS if not hasattr(session, m)]
    if missing:
        raise BackendUnavailableError(f"the {fmt} backend's session lacks {', '.join(missing)}: it implements an "
                                      f"older Session protocol than {SESSION_API}; "
                                      "upgrade the plugin (docs/extending.md)")
    return cast(Session, session)  # its members are there (checked above)


def to_nhwc(value: np.ndarray) -> np.ndarray:
    """A 4-D NCHW tensor as contiguous NHWC; other ranks unchanged."""
    return np.ascontiguousarray(value.transpose(0, 2, 3, 1)) if value.ndim == 4 else value


def to_nchw(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value.transpose(0, 3, 1, 2)) if value.ndim == 4 else value


class _ChannelsLast:
    """An artifact exported channels-last: callers keep feeding the manifest's NCHW
    tensors; 4-D inputs are transposed to NHWC and 4-D outputs back to NCHW."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.backend, self.backend_version, self.threads = session.backend, session.backend_version, session.threads

    def native_dtypes(self) -> dict[str, np.dtype]:
        return self._session.native_dtypes()

    def quantization(self) -> dict[str, tuple[float, int]]:
        return self._session.quantization()

    def run(self, feeds: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
        out = self._session.run({k: to_nhwc(v) for k, v in feeds.items()}, raw)
        return {k: to_nchw(v) for k, v in out.items()}

    def fixed_shapes(self) -> Optional[list[dict[str, tuple[int, ...]]]]:
        shapes = self._session.fixed_shapes()

        def nchw(s: tuple[int, ...]) -> tuple[int, ...]:
            return (s[0], s[3], s[1], s[2]) if len(s) == 4 else s
        return None if shapes is None else [{k: nchw(s) for k, s in one.items()} for one in shapes]


class _Padded:
    """An artifact built for a few fixed sizes of the model's dynamic dims (TFLite): a call
    goes to the smallest size that holds it, zero-padded, and its outputs are cut back."""

    def __init__(self, session: Session, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self._session, self._inputs, self._outputs = session, tuple(inputs), tuple(outputs)
        self.backend, self.backend_version, self.threads = session.backend, session.backend_version, session.threads
        shapes = session.fixed_shapes()
        if shapes is None:
            raise ValueError("_Padded wraps a session built for fixed sizes")
        self._shapes = shapes

    def native_dtypes(self) -> dict[str, np.dtype]:
        return self._session.native_dtypes()

    def quantization(self) -> dict[str, tuple[float, int]]:
        return self._session.quantization()

    def fixed_shapes(self) -> Optional[list[dict[str, tuple[int, ...]]]]:
        return self._shapes

    def run(self, feeds: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
        for shapes in self._shapes:
            if all(all(n <= m for n, m in zip(feeds[k].shape, s)) for k, s in shapes.items()):
                break
        else:
            largest = ", ".join(f"{k} {list(s)}" for k, s in self._shapes[-1].items())
            raise InputError(f"inputs larger than this artifact's largest size ({largest}); "
                             "shorten them or rebuild with a larger range")
        if all(feeds[k].shape == s for k, s in shapes.items()):
            return self._session.run(feeds, raw)
        sizes = dim_sizes(self._inputs, {k: v.shape for k, v in feeds.items()})
        return crop(self._outputs, self._session.run(pad(self._inputs, feeds, shapes), raw), sizes)


def open_session(fmt: str, path: Path, threads: int, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 layout: Optional[str] = None) -> Session:
    """Load the artifact at `path` with the backend for `fmt`, using exactly `threads` threads.
    Feeds and results are keyed by the manifest's names, in the manifest's layout, at any
    size the specs allow."""
    session = _checked(fmt, _module(fmt).open_session(path, threads, [s.name for s in inputs],
                                                      [s.name for s in outputs]))
    if layout == NHWC:
        session = _ChannelsLast(session)
    if session.fixed_shapes() is not None:
        session = _Padded(session, inputs, outputs)
    return session


def backend_available(fmt: str) -> bool:
    """Whether the backend library for `fmt` can be imported here (without loading a model)."""
    return fmt in backends() and _module(fmt).available()
