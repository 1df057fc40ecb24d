"""Bundle versions on the device, side by side, switched atomically (docs/fleet.md).

    STORE/<name>/versions/<version>/   one complete bundle per version (version: the first
                                       12 hex digits of its manifest's sha256)
    STORE/<name>/current               symlink to versions/<version>, replaced by one rename
    STORE/<name>/history.json          activations (newest last) and each version's verification

`install` copies a bundle in under a temporary name, verifies it there (every sha256,
each artifact's golden self-test, the signature policy) and only then activates it; a
version that fails leaves `current` where it was. `rollback` activates the version
active before the current one. `serve STORE/<name>/current` follows the link.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from .bundle import open_bundle
from .errors import EdgepackError, StoreError, first_line
from .files import atomic_write, checked_path
from .signature import SIGNATURE_FILE

__all__ = ["install", "activate", "rollback", "status", "StoreError", "Installed", "CURRENT", "DEFAULT_KEEP"]

CURRENT = "current"
VERSIONS = "versions"
HISTORY = "history.json"
DEFAULT_KEEP = 3  # versions kept per bundle: the current one, the one to roll back to, one more
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Installed:
    """What `install` did: the version, whether it verified, whether it is now active."""

    name: str
    version: str
    verified: bool
    active: bool
    seconds: float
    reason: Optional[str] = None  # why it was not activated
    verification: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _home(store: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise StoreError(f"bundle name {name[:40]!r} cannot name a folder in the store; rebuild with --name "
                         "using letters, digits, '.', '_' and '-'")
    checked_path(Path(store).expanduser() / name, "bundle store folder", "choose another --store")
    return Path(store).expanduser() / name


def _state(home: Path) -> dict[str, Any]:
    """history.json: `activations` (newest last) and `verified` (version → its verification)."""
    try:
        data = json.loads((home / HISTORY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"activations": [], "verified": {}}
    except (OSError, ValueError) as exc:
        raise StoreError(f"{home / HISTORY} cannot be read ({first_line(exc, 80)}); fix or remove it") from exc
    if not isinstance(data, dict) or not isinstance(data.get("activations", []), list):
        raise StoreError(f"{home / HISTORY} is not a store history; fix or remove it")
    return {"activations": data.get("activations", []), "verified": data.get("verified", {})}


def _save(home: Path, state: dict[str, Any]) -> None:
    atomic_write(home / HISTORY, json.dumps(state, indent=2) + "\n")


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One store change at a time per bundle name (installs from two shells, a deploy and a
    rollback): history.json and pruning stay consistent."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _active(home: Path) -> Optional[str]:
    link = home / CURRENT
    return Path(os.readlink(link)).name if link.is_symlink() else None


def _switch(home: Path, version: str, state: dict[str, Any]) -> None:
    """Point `current` at the version by one rename (readers see the old or the new link),
    then record it."""
    tmp = home / f".{CURRENT}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(Path(VERSIONS) / version, tmp)
    os.replace(tmp, home / CURRENT)
    state["activations"].append({"version": version, "activated": _now(), "verification": state["verified"][version]})
    _save(home, state)


def _prune(home: Path, keep: int, state: dict[str, Any]) -> None:
    """Keep the `keep` most recently activated versions, the current one, and versions
    verified but never activated yet (`install --no-activate`, waiting for `activate`)."""
    recent: list[str] = []
    for entry in reversed(state["activations"]):
        if entry["version"] not in recent:
            recent.append(entry["version"])
    waiting = set(state["verified"]) - set(recent)
    keepers = set(recent[:max(keep, 1)]) | waiting | {_active(home)}
    for path in (home / VERSIONS).iterdir():
        if path.name not in keepers and not path.name.startswith("."):
            shutil.rmtree(path, ignore_errors=True)
            state["verified"].pop(path.name, None)
    _save(home, state)


def _signature(root: Path) -> Optional[bytes]:
    try:
        return (root / SIGNATURE_FILE).read_bytes()
    except FileNotFoundError:
        return None


def install(source: Path, store: Path, keep: int = DEFAULT_KEEP, activate_it: bool = True,
            require_signature: bool = False) -> Installed:
    """Copy the bundle at `source` into the store, verify it there, and activate it if it
    passes. A failed verification removes the copy and leaves `current` untouched."""
    from .verification import verify_bundle

    start = time.perf_counter()
    incoming = open_bundle(source)
    name, version = incoming.manifest.name, incoming.sha256[:12]
    home = _home(store, name)

    def refused(reason: str, report: Optional[dict[str, Any]] = None) -> Installed:
        return Installed(name, version, False, False, round(time.perf_counter() - start, 3), reason=reason,
                         verification=_summary(report) if report else {})

    with _locked(home):
        versions = home / VERSIONS
        final = versions / version
        # A version already stored is verified where it is, unless it arrives with another
        # signature (signed since, a new key): then the new copy replaces it once verified.
        signature = _signature(incoming.root)
        fresh = not final.is_dir() or (signature is not None and signature != _signature(final))
        staged = None
        try:
            versions.mkdir(parents=True, exist_ok=True)
            if fresh:
                staged = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=versions))
                shutil.copytree(incoming.root, staged, dirs_exist_ok=True, symlinks=True)
            bundle = open_bundle(staged or final)
            if bundle.sha256 != incoming.sha256:
                raise StoreError(f"the copy of {source} in the store differs from it; the source changed while copying")
            report = verify_bundle(bundle, require_signature=require_signature)
            if not report["passed"]:
                why = (f"{report['failed']} artifact(s) failed the self-test" if report["failed"]
                       else "no artifact could be tested here (no backend installed)")
                return refused(why, report)
            if staged is not None:
                if final.is_dir():  # re-signed: swap the verified copy in (two renames)
                    old = versions / f".{version}-replaced-{os.getpid()}"
                    os.rename(final, old)
                    os.rename(staged, final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.rename(staged, final)
                staged = None
        except EdgepackError as exc:
            return refused(str(exc))
        except OSError as exc:  # a full disk, permissions: nothing half-done stays
            return refused(f"the store at {home} cannot take it ({first_line(exc, 120)})")
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
        state = _state(home)
        state["verified"][version] = verification = _summary(report)
        _save(home, state)
        if activate_it and _active(home) != version:
            _switch(home, version, state)
            _prune(home, keep, state)
    return Installed(name, version, True, _active(home) == version, round(time.perf_counter() - start, 3),
                     verification=verification)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {"passed": report["passed"], "tested": report["tested"], "failed": report["failed"],
            "signature": report.get("signature"), "at": _now()}


def activate(store: Path, name: str, version: str) -> str:
    """Make a stored, verified version current again."""
    home = _home(store, name)
    with _locked(home):
        state = _state(home)
        if not (home / VERSIONS / version).is_dir():
            stored = ", ".join(sorted(_stored(home))) or "none"
            raise StoreError(f"{name} has no version {version[:20]!r} in the store (stored: {stored})")
        if version not in state["verified"]:
            raise StoreError(f"{name} {version} was never verified here; install it again")
        if _active(home) != version:
            _switch(home, version, state)
    return version


def rollback(store: Path, name: str) -> str:
    """Activate the version that was active before the current one."""
    home = _home(store, name)
    current = _active(home)
    for entry in reversed(_state(home)["activations"]):
        if entry["version"] != current and (home / VERSIONS / entry["version"]).is_dir():
            return activate(store, name, entry["version"])
    raise StoreError(f"{name} has no earlier verified version in the store to roll back to")


def _stored(home: Path) -> list[str]:
    versions = home / VERSIONS
    if not versions.is_dir():
        return []
    return [p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")]


def status(store: Path) -> list[dict[str, Any]]:
    """Per bundle name: the active version and since when, and every stored version."""
    root = Path(store).expanduser()
    checked_path(root, "bundle store", "choose another --store")
    if not root.is_dir():
        raise StoreError(f"no bundle store at {root}; `edgepack-runtime install BUNDLE --store {root}` creates it")
    names = []
    for home in sorted(p for p in root.iterdir() if (p / VERSIONS).is_dir()):
        state, active = _state(home), _active(home)
        history = state["activations"]
        since = next((e["activated"] for e in reversed(history) if e["version"] == active), None)
        versions = []
        for version in sorted(_stored(home)):
            try:
                manifest = open_bundle(home / VERSIONS / version).manifest
                created = manifest.created
            except EdgepackError:
                created = None
            last = next((e for e in reversed(history) if e["version"] == version), None)
            versions.append({"version": version, "created": created, "active": version == active,
                             "last_activated": last["activated"] if last else None,
                             "verification": state["verified"].get(version)})
        names.append({"name": home.name, "active": active, "since": since, "versions": versions})
    return names
