"""Write a bundle atomically: build in a staging directory beside the destination,
fsync everything, then swap it into place with renames.

An interrupted or failed build leaves the destination exactly as it was; an existing
bundle is replaced only by a complete one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgepack_runtime.manifest import MANIFEST_NAME

from .errors import BuildError

__all__ = ["BundleStaging"]


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BundleStaging:
    """`with BundleStaging(dest) as staging:` write files into `staging.dir`, then
    `staging.commit()`. Leaving the block without committing removes the staging dir."""

    def __init__(self, dest: Path):
        self.dest = Path(dest).expanduser().absolute()
        if self.dest.exists():
            is_bundle = (self.dest / MANIFEST_NAME).is_file()
            is_empty_dir = self.dest.is_dir() and not any(self.dest.iterdir())
            if not (is_bundle or is_empty_dir):
                raise BuildError(
                    f"{self.dest} exists and is not an edgepack bundle; refusing to overwrite it. "
                    "Choose another -o or remove it yourself"
                )
        self.dir: Path | None = None

    def __enter__(self) -> "BundleStaging":
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.partial-", dir=self.dest.parent))
        # mkdtemp makes the directory private (0700); a bundle is meant to be copied and shared.
        umask = os.umask(0)
        os.umask(umask)
        self.dir.chmod(0o777 & ~umask)
        return self

    def commit(self) -> Path:
        _fsync_tree(self.dir)
        old = None
        if self.dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.old-", dir=self.dest.parent))
            os.rename(self.dest, old / "bundle")
        os.rename(self.dir, self.dest)
        _fsync_dir(self.dest.parent)
        self.dir = None
        if old is not None:
            shutil.rmtree(old)
        return self.dest

    def __exit__(self, *exc) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
