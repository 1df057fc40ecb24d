"""Open a bundle directory: read its manifest, keep every path inside it, check hashes."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import BundleError, IntegrityError
from .files import checked_path
from .manifest import MANIFEST_NAME, Artifact, FileRef, Manifest

__all__ = ["Bundle", "open_bundle", "sha256_file", "GOLDEN_INPUT_PREFIX", "GOLDEN_OUTPUT_PREFIX",
           "GOLDEN_ARTIFACT_PREFIX"]

_HASH_CHUNK = 1 << 20
GOLDEN_INPUT_PREFIX = "inputs/"
GOLDEN_OUTPUT_PREFIX = "outputs/"
# Each artifact's own outputs on the golden inputs, on the build host: "artifacts/NAME/OUTPUT".
GOLDEN_ARTIFACT_PREFIX = "artifacts/"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest
    sha256: str  # of manifest.json, which holds every file's hash: identifies the bundle

    def resolve(self, relative: str) -> Path:
        """The absolute path of a bundle file; refuses paths that leave the bundle."""
        candidate = Path(relative)
        resolved = checked_path(self.root / candidate, "bundle file",
                                "the bundle was tampered with; copy or rebuild it")
        if candidate.is_absolute() or not resolved.is_relative_to(self.root):
            raise IntegrityError(
                f"manifest path {relative!r} points outside the bundle {self.root}; "
                "the bundle was tampered with, rebuild it"
            )
        return resolved

    def _check_file(self, relative: str, expected_sha256: str) -> None:
        path = self.resolve(relative)
        if not path.is_file():
            raise IntegrityError(
                f"bundle file {relative} is missing from {self.root}; copy the whole bundle directory again"
            )
        _refuse_links(self.root / relative, relative)
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise IntegrityError(
                f"bundle file {relative} does not match its sha256 in {MANIFEST_NAME} "
                f"(expected {expected_sha256[:12]}…, found {actual[:12]}…); it was corrupted "
                "or modified, copy the bundle again"
            )

    def verify_artifact(self, artifact: Artifact, hashed: bool = True) -> Path:
        """Check the hash of each of an artifact's files; return the path its backend opens.
        `hashed=False`: the caller has just checked them (verify_integrity), not again."""
        if artifact.status != "ok" or not artifact.path or not artifact.sha256:
            raise BundleError(
                f"artifact {artifact.name!r} is not in the bundle ({artifact.status}: {artifact.error or 'no file'}); "
                "choose another artifact or rebuild"
            )
        for file in artifact.all_files() if hashed else ():
            self._check_file(file.path, file.sha256)
        return self.resolve(artifact.path)

    def verify_integrity(self) -> None:
        """Check the hash of every file the manifest lists."""
        self._check_file(self.manifest.golden.path, self.manifest.golden.sha256)
        for ref in self.manifest.data_files():
            self._check_file(ref.path, ref.sha256)
        for artifact in self.manifest.artifacts:
            if artifact.status == "ok":
                self.verify_artifact(artifact)

    def read_data_file(self, ref: FileRef) -> bytes:
        """A small bundle file (labels, tokenizer), read once and checked against its sha256
        in that same read: what is used is what was checked."""
        path = self.resolve(ref.path)
        if not path.is_file():
            raise IntegrityError(f"bundle file {ref.path} is missing from {self.root}; "
                                 "copy the whole bundle directory again")
        _refuse_links(self.root / ref.path, ref.path)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise IntegrityError(f"bundle file {ref.path} does not match its sha256 in {MANIFEST_NAME}; it was "
                                 "corrupted or modified, copy the bundle again")
        return data

    def _golden_arrays(self) -> dict[str, np.ndarray]:
        golden = self.manifest.golden
        self._check_file(golden.path, golden.sha256)
        try:
            with np.load(self.resolve(golden.path), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # e.g. object arrays: never unpickled
            raise BundleError(f"{golden.path} cannot be read ({exc}); rebuild the bundle") from exc
        if any(a.dtype.kind not in "biuf" for a in arrays.values()):
            raise BundleError(f"{golden.path} holds non-numeric arrays; rebuild the bundle")
        return arrays

    def golden(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Golden inputs and PyTorch reference outputs, stacked on a first sample axis."""
        return self._golden_from(self._golden_arrays())

    def _golden_from(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        inputs = {k[len(GOLDEN_INPUT_PREFIX):]: v for k, v in arrays.items() if k.startswith(GOLDEN_INPUT_PREFIX)}
        outputs = {k[len(GOLDEN_OUTPUT_PREFIX):]: v for k, v in arrays.items() if k.startswith(GOLDEN_OUTPUT_PREFIX)}
        why = _golden_problem(self.manifest, inputs, outputs)
        if why is not None:
            raise BundleError(f"{self.manifest.golden.path} cannot serve as the golden self-test: {why}; "
                              "rebuild the bundle")
        return inputs, outputs

    def own_outputs(self, artifact: str) -> Optional[dict[str, np.ndarray]]:
        """`artifact`'s own outputs on the golden inputs, computed on the build host (bundles
        since 2.3; None before, or when they do not fit): the device's self-test holds the
        artifact to them as well as to PyTorch's."""
        arrays = self._golden_arrays()  # read once: the inputs' count and the own outputs
        inputs, _ = self._golden_from(arrays)
        prefix = f"{GOLDEN_ARTIFACT_PREFIX}{artifact}/"
        found = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        count = len(next(iter(inputs.values())))
        if set(found) != {s.name for s in self.manifest.outputs} or any(v.ndim == 0 or len(v) != count
                                                                        for v in found.values()):
            return None
        return found


def _golden_problem(manifest: Manifest, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Optional[str]:
    """What makes golden samples unusable (None if nothing): every input and output the
    manifest declares, as stacked samples, the same number (at least one) of each."""
    for kind, arrays, specs in (("input", inputs, manifest.inputs), ("output", outputs, manifest.outputs)):
        missing = [s.name for s in specs if s.name not in arrays]
        if not arrays or missing:
            return f"it holds no golden {kind} {(missing or ['at all'])[0]!r}"
    counts = {name: (len(a) if a.ndim else 0) for name, a in {**inputs, **outputs}.items()}
    if min(counts.values()) < 1:
        return "it holds no samples"
    if len(set(counts.values())) > 1:
        return f"its arrays hold different numbers of samples ({', '.join(sorted(map(str, set(counts.values()))))})"
    return None


def _refuse_links(path: Path, relative: str) -> None:
    """A bundle holds its own files: a symlink or a hard link could make the runtime read (and
    a server answer with) a file from elsewhere on the device."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or info.st_nlink > 1:
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "a hard link shared with another path"
        raise IntegrityError(f"bundle file {relative} is {kind}; copy the bundle as plain files (cp -r, rsync "
                             "without --link-dest) and load the copy")


def open_bundle(path: str | Path) -> Bundle:
    """Read a bundle's manifest. Hashes are checked by `verify_*` (and by `load`)."""
    checked_path(path, "bundle", "pass the directory `edgepack build -o` wrote")
    root = Path(path).expanduser()
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory; pass the bundle directory `edgepack build -o` wrote")
    if not manifest_path.is_file():
        raise BundleError(
            f"{root} has no {MANIFEST_NAME}, so it is not an edgepack bundle; "
            "pass the directory `edgepack build -o` wrote"
        )
    _refuse_links(manifest_path, MANIFEST_NAME)
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {manifest_path} ({exc.strerror}); check the bundle's permissions") from exc
    manifest = Manifest.from_json(raw.decode("utf-8", errors="replace"))
    return Bundle(root=root.resolve(), manifest=manifest, sha256=hashlib.sha256(raw).hexdigest())
