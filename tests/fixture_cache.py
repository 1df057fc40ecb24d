"""Session fixtures made once per version of the code: the trained digits model and the
bundles built from it are kept under .cache/tests/, keyed by a hash of every source file
that makes them, the libraries' versions and this host. A change to any of those makes
them again; EDGEPACK_TEST_CACHE=0 makes them in the session's temporary directory instead."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "tests"
CACHE_ENV = "EDGEPACK_TEST_CACHE"
# What a fixture is made from: the packages, the digits example and these fixtures.
SOURCES = ("edgepack", "runtime/edgepack_runtime", "targets", "examples/digits", "tests/conftest.py",
           "tests/fixture_cache.py")
SOURCE_SUFFIXES = (".py", ".toml", ".json", ".txt")
LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxscript", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
             "numpy", "ncnn", "pnnx", "scikit-learn", "nncf")
COMPLETE = ".complete"
STALE_S = 24 * 3600  # entries of other code versions are removed once this old


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


@functools.cache
def code_hash(sources: tuple[str, ...] = SOURCES) -> str:
    """`sources` (files or folders under the repository), library versions and host, as
    one short hex digest."""
    from edgepack_runtime.hostinfo import host_info

    digest = hashlib.sha256()
    for source in sources:
        path = ROOT / source
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix in SOURCE_SUFFIXES:
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes() + b"\0")
    digest.update(json.dumps({n: _version(n) for n in LIBRARIES}, sort_keys=True).encode())
    digest.update(json.dumps(host_info().to_dict(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def describe(value) -> str:
    """A value for a cache key: a file by its content, containers element by element."""
    if isinstance(value, Path):
        return hashlib.sha256(value.read_bytes()).hexdigest() if value.is_file() else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(describe(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{describe(v)}" for k, v in sorted(value.items())) + "}"
    return repr(value)


def cached(label: str, make: Callable[[Path], Path], scratch: Callable[[str], Path],
           intact: Callable[[Path], bool] = lambda _: True, sources: tuple[str, ...] = SOURCES) -> Path:
    """What `make(folder)` returns (a path inside `folder`), made once per `label` and
    version of `sources` (code_hash), and again if `intact(path)` finds it changed (a test
    that forgot to copy it). `scratch(name)` gives a fresh folder when the cache is off."""
    if os.environ.get(CACHE_ENV) == "0":
        return make(scratch(label[:40]))
    key = hashlib.sha256(label.encode()).hexdigest()[:12]
    entry = CACHE / f"{code_hash(sources)}-{key}"
    if (entry / COMPLETE).is_file():
        if intact(entry / (entry / COMPLETE).read_text()):
            os.utime(entry)  # used: kept by _prune
            return entry / (entry / COMPLETE).read_text()
        shutil.rmtree(entry)
    CACHE.mkdir(parents=True, exist_ok=True)
    _prune()
    work = Path(tempfile.mkdtemp(prefix=".partial-", dir=CACHE))
    try:
        made = make(work)
        (work / COMPLETE).write_text(str(made.relative_to(work)))
        os.rename(work, entry)
    except OSError:
        if not (entry / COMPLETE).is_file():  # not another session that finished first
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return entry / (entry / COMPLETE).read_text()


@functools.cache
def _prune() -> None:
    """Remove entries not made or used for a day (once per session)."""
    import time

    for old in CACHE.iterdir():
        if time.time() - old.stat().st_mtime > STALE_S:
            shutil.rmtree(old, ignore_errors=True)


def bundle_intact(path: Path) -> bool:
    """Whether every file of the bundle at `path` still matches its manifest."""
    from edgepack_runtime.bundle import open_bundle
    from edgepack_runtime.errors import EdgepackError

    try:
        open_bundle(path).verify_integrity()
    except EdgepackError:
        return False
    return True
