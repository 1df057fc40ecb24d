"""Versions of the documents edgepack writes (bundle manifests, bench results): "MAJOR.MINOR".

A minor version only adds keys, with defaults; a reader takes every minor of its major
(and earlier majors it still knows), ignoring keys newer than itself, and refuses a newer
major. Documents from before this scheme wrote a plain integer N, read as N.0.
"""

from __future__ import annotations

import re
from typing import Any, Optional

__all__ = ["parse_version", "newer_major", "newer_minor"]

_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})")


def parse_version(value: Any) -> Optional[tuple[int, int]]:
    """(major, minor) of "2.1" or of a plain integer N (N.0); None when it is neither."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 10_000:
        return value, 0
    match = _VERSION.fullmatch(value) if isinstance(value, str) else None
    if not match or int(match[1]) < 1:
        return None
    return int(match[1]), int(match[2])


def _own(ours: str) -> tuple[int, int]:
    parsed = parse_version(ours)
    if parsed is None:
        raise ValueError(f"this reader's own version {ours!r} is not MAJOR.MINOR")
    return parsed


def newer_major(theirs: tuple[int, int], ours: str) -> bool:
    """A change this reader would misread: refuse it."""
    return theirs[0] > _own(ours)[0]


def newer_minor(theirs: tuple[int, int], ours: str) -> bool:
    """Keys this reader does not know are expected: ignore them."""
    return theirs > _own(ours)
