"""Write a bundle atomically: build in a staging directory beside the destination,
fsync everything, then swap it into place in one step.

An interrupted or failed build leaves the destination exactly as it was; an existing
bundle is replaced only by a complete one, and at every instant the destination holds a
complete bundle (Linux `renameat2(RENAME_EXCHANGE)` swaps the two directories at once).
`-o` never replaces anything but a bundle edgepack wrote, with no file it does not list:
a folder of the user's that happens to hold a `manifest.json` is not a bundle.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from edgepack_runtime.errors import BundleError
from edgepack_runtime.files import NAME_MAX, checked_path, shown_path
from edgepack_runtime.manifest import MANIFEST_NAME, Manifest
from edgepack_runtime.signature import SIGNATURE_FILE

from .errors import BuildError

__all__ = ["BundleStaging", "is_disk_full"]

_AT_FDCWD = -100
_STEM_BYTES = NAME_MAX - 48  # room for ".", ".partial-", a pid and mkdtemp's suffix
# A full disk or quota, in any stage: one line, the staging directory removed.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_RENAME_EXCHANGE = 2
# Filesystems or kernels without renameat2's exchange answer with one of these.
_NO_EXCHANGE = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


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


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step; False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _check_destination(dest: Path) -> None:
    """Refuse a destination that is not empty and not a bundle edgepack wrote, or that holds
    files its manifest does not list: replacing it would delete the user's files."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise BuildError(f"{dest} exists and is not a directory; choose another -o")
    entries = sorted(p.name for p in dest.iterdir())
    if not entries:
        return
    try:
        manifest = Manifest.from_json((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
        listed = ({MANIFEST_NAME, SIGNATURE_FILE, manifest.golden.path} | {f.path for f in manifest.data_files()}
                  | {f.path for a in manifest.artifacts for f in a.all_files()})
    except (OSError, UnicodeDecodeError, BundleError, TypeError, ValueError, AttributeError) as exc:
        why = ("no manifest.json" if not (dest / MANIFEST_NAME).exists()
               else f"its manifest.json is not edgepack's: {exc}")
        raise BuildError(f"{dest} is not an edgepack bundle ({why}); refusing to replace it. "
                         "Choose another -o or empty it yourself") from exc
    unknown = [name for name in entries if name not in listed]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", …" if len(unknown) > 5 else "")
        raise BuildError(f"{dest} is a bundle but also holds files it does not list ({shown}); refusing to "
                         "replace it and lose them. Move them out or choose another -o")


def _stem(dest: Path) -> str:
    """The destination's name as staging names carry it: cut (with a digest, so that two long
    names never share one) where `.NAME.partial-PID-XXXXXXXX` would pass NAME_MAX."""
    if len(os.fsencode(dest.name)) <= _STEM_BYTES:
        return dest.name
    digest = hashlib.sha256(os.fsencode(dest.name)).hexdigest()[:12]
    return os.fsencode(dest.name)[:_STEM_BYTES - 13].decode("utf-8", errors="ignore") + "~" + digest


def _sweep(dest: Path) -> None:
    """Remove staging and old-bundle directories that killed builds left beside `dest`
    (their names carry the builder's pid; a live builder's are left alone)."""
    pattern = re.compile(rf"^\.{re.escape(_stem(dest))}\.(partial|old)-(\d+)-")
    for sibling in dest.parent.iterdir():
        match = pattern.match(sibling.name)
        if match and sibling.is_dir() and not _alive(int(match.group(2))):
            shutil.rmtree(sibling, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BundleStaging:
    """`with BundleStaging(dest) as staging:` write files into `staging.dir`, then
    `staging.commit()`. Leaving the block without committing removes the staging dir."""

    def __init__(self, dest: Path):
        given = Path(dest).expanduser().absolute()
        resolved = checked_path(given, "-o", "choose another -o")
        # -o a symbolic link (to a bundle, or to where one goes): the bundle is written where
        # it points and swapped in there; the link itself is never replaced, so it survives.
        self.dest = resolved if given.is_symlink() else given
        self.link = given if given.is_symlink() else None
        _check_destination(self.dest)  # before any work: the build would only be refused at the end
        self.dir: Optional[Path] = None

    def __enter__(self) -> "BundleStaging":
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            _sweep(self.dest)
            self.dir = Path(tempfile.mkdtemp(prefix=f".{_stem(self.dest)}.partial-{os.getpid()}-",
                                             dir=self.dest.parent))
        except OSError as exc:
            raise BuildError(f"cannot write beside {self.dest} ({exc.strerror or exc}); choose a writable -o") from exc
        # mkdtemp makes the directory private (0700); a bundle is meant to be copied and shared.
        umask = os.umask(0)
        os.umask(umask)
        self.dir.chmod(0o777 & ~umask)
        return self

    @property
    def path(self) -> Path:
        """The staging directory, inside `with` (BuildError outside it)."""
        if self.dir is None:
            raise BuildError(f"the staging directory of {self.dest} is used outside its `with` block")
        return self.dir

    def commit(self) -> Path:
        _check_destination(self.dest)  # again: the folder may have changed during the build
        staged = self.path
        _fsync_tree(staged)
        if not self.dest.exists():
            os.rename(staged, self.dest)
            replaced = None
        elif _exchange(staged, self.dest):
            replaced = staged  # the old bundle now sits where the staging dir was
        else:
            # No atomic exchange here: two renames, with a moment without a bundle at dest;
            # the old one waits in `.NAME.old-PID-*`, which the next build sweeps.
            replaced = Path(tempfile.mkdtemp(prefix=f".{_stem(self.dest)}.old-{os.getpid()}-", dir=self.dest.parent))
            os.rename(self.dest, replaced / "bundle")
            os.rename(staged, self.dest)
        _fsync_dir(self.dest.parent)
        self.dir = None
        if replaced is not None:
            shutil.rmtree(replaced)
        return self.link or self.dest

    def __exit__(self, kind, exc, tb) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise _disk_full(exc, self.dest) from None


def _disk_full(exc: OSError, dest: Path) -> BuildError:
    """The one line for a full disk, whichever stage wrote when it filled."""
    where = f" writing {shown_path(exc.filename)}" if exc.filename else ""
    return BuildError(f"the disk is full{where} ({exc.strerror}); the partial build was removed and {shown_path(dest)} "
                      "is as it was: free some space (or choose an -o on another disk) and build again")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC and its kin (quota, file too large): what the CLI reports as a full disk."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL
