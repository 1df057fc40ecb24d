"""Inference backends, one module per artifact format, imported only when needed."""

from __future__ import annotations

import importlib
from typing import Mapping, Optional, Protocol, Sequence

import numpy as np

from ..errors import BundleError

__all__ = ["Session", "open_session", "backend_available", "to_nhwc", "FORMATS", "NHWC"]

# format name -> module in this package that implements `open_session` and `available`
FORMATS = {"onnx": "onnx", "tflite": "tflite"}
NHWC = "nhwc"


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


def _module(fmt: str):
    if fmt not in FORMATS:
        raise BundleError(
            f"artifact format {fmt!r} is not supported by this edgepack-runtime "
            f"(supported: {', '.join(FORMATS)}); upgrade edgepack-runtime"
        )
    return importlib.import_module(f"{__name__}.{FORMATS[fmt]}")


def to_nhwc(value: np.ndarray) -> np.ndarray:
    """A 4-D NCHW tensor as contiguous NHWC; other ranks unchanged."""
    return np.ascontiguousarray(value.transpose(0, 2, 3, 1)) if value.ndim == 4 else value


def to_nchw(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value.transpose(0, 3, 1, 2)) if value.ndim == 4 else value


class _ChannelsLast:
    """An artifact exported channels-last: callers keep feeding the manifest's NCHW
    tensors; 4-D inputs are transposed to NHWC and 4-D outputs back to NCHW."""

    def __init__(self, session: Session):
        self._session = session
        self.backend, self.backend_version, self.threads = session.backend, session.backend_version, session.threads

    def native_dtypes(self):
        return self._session.native_dtypes()

    def quantization(self):
        return self._session.quantization()

    def run(self, feeds, raw: bool = False):
        out = self._session.run({k: to_nhwc(v) for k, v in feeds.items()}, raw)
        return {k: to_nchw(v) for k, v in out.items()}


def open_session(fmt: str, path, threads: int, input_names: Sequence[str], output_names: Sequence[str],
                 layout: Optional[str] = None) -> Session:
    """Load the artifact at `path` with the backend for `fmt`, using exactly `threads` threads."""
    session = _module(fmt).open_session(path, threads, input_names, output_names)
    return _ChannelsLast(session) if layout == NHWC else session


def backend_available(fmt: str) -> bool:
    """Whether the backend library for `fmt` can be imported here (without loading a model)."""
    return fmt in FORMATS and _module(fmt).available()
