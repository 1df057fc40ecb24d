"""Where edgepack keeps its own files, and writing a file so that no reader ever sees it half-written."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write", "user_dir", "CACHE_ENV"]

CACHE_ENV = "EDGEPACK_CACHE_DIR"  # one directory for every cache edgepack keeps (tests, CI)
_XDG = {"cache": ("XDG_CACHE_HOME", "~/.cache"), "data": ("XDG_DATA_HOME", "~/.local/share")}


def user_dir(kind: str, app: str) -> Path:
    """`kind` "cache": $EDGEPACK_CACHE_DIR, else $XDG_CACHE_HOME/`app`; "data": $XDG_DATA_HOME/`app`."""
    if kind == "cache" and os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    variable, default = _XDG[kind]
    return Path(os.environ.get(variable) or os.path.expanduser(default)) / app


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to a temporary file next to `path`, then rename it over `path`: a reader
    (a collector, a concurrent first load) sees the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
