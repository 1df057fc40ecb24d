"""The bundle manifest: its dataclasses, reader and writer (schema in docs/bundle-format.md).

The runtime owns the schema; the packager builds these same dataclasses and calls
`Manifest.to_json()`, so writer and reader cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import BundleError

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "TensorSpec",
    "Validation",
    "Accuracy",
    "Artifact",
    "Golden",
    "Manifest",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: static shape, numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.name}:{'x'.join(map(str, self.shape))}:{self.dtype}"


@dataclass(frozen=True)
class Validation:
    """Outputs of one artifact against PyTorch on the golden inputs."""

    passed: bool
    max_abs_diff: float
    tolerance: float
    samples: int
    backend: str
    host: dict  # where it ran: arch, cpu, isa
    host_matches_target: bool


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy (percent) of an artifact and of PyTorch on labelled eval data."""

    top1: float
    reference_top1: float
    samples: int
    # int8 kernels differ between ISAs: a number measured on a host that does not
    # match the target says little about the device.
    indicative: bool

    @property
    def drop(self) -> float:
        return self.reference_top1 - self.top1


@dataclass(frozen=True)
class Artifact:
    """One exported model file (or a failed attempt at one)."""

    name: str
    format: str
    precision: str
    status: str  # "ok" or "failed"
    path: Optional[str] = None
    sha256: Optional[str] = None
    size_bytes: Optional[int] = None
    error: Optional[str] = None
    quantization: Optional[dict] = None
    layout: Optional[str] = None  # "nhwc": 4-D tensors are channels-last inside the artifact
    validation: Optional[Validation] = None
    accuracy: Optional[Accuracy] = None

    @property
    def usable(self) -> bool:
        """Built and validated: safe to pick without the user naming it."""
        return self.status == "ok" and self.validation is not None and self.validation.passed


@dataclass(frozen=True)
class Golden:
    """Golden inputs and PyTorch reference outputs for the on-device self-test."""

    path: str
    sha256: str
    samples: int
    # The first `real_samples` come from the calibration data; the rest are seeded random
    # inputs. Integer artifacts are compared on the real ones only: random inputs push
    # activations outside the calibrated ranges, where int8 clips by design.
    real_samples: int = 0


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    name: str
    created: str
    target: dict
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    artifacts: tuple[Artifact, ...]
    golden: Golden
    toolchain: dict
    accuracy_tolerance: float  # largest allowed top-1 drop vs PyTorch, in points
    build: dict = field(default_factory=dict)  # how the bundle was made: host, stage timings
    macs: Optional[int] = None  # multiply-accumulates per inference, counted on the ONNX graph
    # Per input: histogram and per-channel stats of the calibration data (drift.py); None
    # when int8 was calibrated on random data, which is no reference for anything.
    drift_reference: Optional[dict] = None
    # `edgepack build --verify-emulated`: per-artifact results on emulated aarch64 (edgepack/emulate.py)
    emulated: Optional[dict] = None

    def artifact(self, name: str) -> Artifact:
        for art in self.artifacts:
            if art.name == name:
                return art
        known = ", ".join(a.name for a in self.artifacts) or "none"
        raise BundleError(
            f"bundle {self.name!r} has no artifact {name!r}; its artifacts are: {known}"
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(
                f"{MANIFEST_NAME} is not valid JSON ({exc}); rebuild the bundle with `edgepack build`"
            ) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        if not isinstance(data, dict):
            raise BundleError(f"{MANIFEST_NAME} must hold a JSON object; rebuild the bundle")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise BundleError(f"{MANIFEST_NAME} has no integer schema_version; rebuild the bundle")
        if version > SCHEMA_VERSION:
            raise BundleError(
                f"bundle schema_version {version} is newer than this runtime understands "
                f"({SCHEMA_VERSION}); upgrade edgepack-runtime"
            )
        fields = _fields(cls, data, "manifest")
        fields["inputs"] = tuple(_tensor(t) for t in fields["inputs"])
        fields["outputs"] = tuple(_tensor(t) for t in fields["outputs"])
        fields["artifacts"] = tuple(_artifact(a) for a in fields["artifacts"])
        fields["golden"] = Golden(**_fields(Golden, fields["golden"], "golden"))
        return cls(**fields)


def _fields(cls: type, data: Any, where: str) -> dict:
    """Check that `data` has exactly the fields of `cls` (defaults may be missing)."""
    if not isinstance(data, dict):
        raise BundleError(f"{MANIFEST_NAME}: {where} must be an object; rebuild the bundle")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    required = {
        n for n, f in known.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if unknown or missing:
        problem = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
        raise BundleError(
            f"{MANIFEST_NAME}: {where} has {problem}; the bundle is damaged or from an "
            "incompatible edgepack, rebuild it"
        )
    return dict(data)


def _tensor(data: Any) -> TensorSpec:
    fields = _fields(TensorSpec, data, "tensor spec")
    return TensorSpec(name=fields["name"], shape=tuple(fields["shape"]), dtype=fields["dtype"])


def _artifact(data: Any) -> Artifact:
    fields = _fields(Artifact, data, "artifact")
    where = f"artifact {fields.get('name')!r}"
    if fields.get("validation") is not None:
        fields["validation"] = Validation(**_fields(Validation, fields["validation"], where))
    if fields.get("accuracy") is not None:
        fields["accuracy"] = Accuracy(**_fields(Accuracy, fields["accuracy"], where))
    return Artifact(**fields)
