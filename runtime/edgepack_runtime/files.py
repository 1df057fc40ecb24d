"""Where edgepack keeps its own files, and writing a file so that no reader ever sees it half-written."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Union

from .errors import PathError

__all__ = ["atomic_write", "user_dir", "checked_path", "shown_path", "CACHE_ENV", "NAME_MAX", "PATH_MAX"]

# Linux's limits (os.pathconf may not answer for a path that does not exist yet).
NAME_MAX = 255  # bytes per path component
PATH_MAX = 4096  # bytes in all
SHOWN_PATH_CHARS = 80  # a hostile path is shown cut to this, never as a 4 KiB line

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


def shown_path(path: object, limit: int = SHOWN_PATH_CHARS) -> str:
    """A path as one short line of plain text for a message (the CLI escapes markup)."""
    text = " ".join(str(path).split()) if "\n" in str(path) or "\r" in str(path) else str(path)
    return text if len(text) <= limit else text[: limit // 2] + "…" + text[-(limit // 2):]


def checked_path(path: Union[str, os.PathLike[str]], what: str, fix: str = "use another path") -> Path:
    """The one path rule: `path` (user-expanded) with every symbolic link followed. Raises
    PathError, one line naming `what`, for a component longer than NAME_MAX, a path longer
    than PATH_MAX, or a symbolic link loop; a path that does not exist (yet) is fine."""
    path = Path(path).expanduser()
    raw = os.fsencode(path)
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > NAME_MAX or len(raw) >= PATH_MAX:
        limit = f"a name of {longest} bytes (the limit is {NAME_MAX})" if longest > NAME_MAX else \
            f"{len(raw)} bytes (the limit is {PATH_MAX})"
        raise PathError(f"{what} {shown_path(path)} is too long for the file system: {limit}; {fix}")
    try:
        resolved = path.resolve(strict=False)
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        raise PathError(f"{what} {shown_path(path)} is a symbolic link loop; {fix}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathError(f"{what} {shown_path(path)} is a symbolic link loop; {fix}") from exc
        if exc.errno == errno.ENAMETOOLONG:
            raise PathError(f"{what} {shown_path(path)} is too long for the file system; {fix}") from exc
        raise PathError(f"{what} {shown_path(path)} cannot be resolved ({exc.strerror}); {fix}") from exc
    if len(os.fsencode(resolved)) >= PATH_MAX:  # links can lengthen it
        raise PathError(f"{what} {shown_path(path)} resolves to a path too long for the file system; {fix}")
    return resolved
