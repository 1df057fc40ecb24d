"""Inference backends, one module per artifact format, imported only when needed."""

from __future__ import annotations

import importlib
from typing import Mapping, Protocol

import numpy as np

from ..errors import BundleError

__all__ = ["Session", "open_session", "backend_available", "FORMATS"]

# format name -> module in this package that implements `open_session`
FORMATS = {"onnx": "onnx"}


class Session(Protocol):
    """A loaded artifact ready to run. Feeds and results are keyed by tensor name."""

    backend: str  # e.g. "onnxruntime"
    backend_version: str
    threads: int

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _module(fmt: str):
    if fmt not in FORMATS:
        raise BundleError(
            f"artifact format {fmt!r} is not supported by this edgepack-runtime "
            f"(supported: {', '.join(FORMATS)}); upgrade edgepack-runtime"
        )
    return importlib.import_module(f"{__name__}.{FORMATS[fmt]}")


def open_session(fmt: str, path, threads: int) -> Session:
    """Load the artifact at `path` with the backend for `fmt`, using exactly `threads` threads."""
    return _module(fmt).open_session(path, threads)


def backend_available(fmt: str) -> bool:
    """Whether the backend library for `fmt` can be imported here (without loading a model)."""
    return fmt in FORMATS and _module(fmt).available()
