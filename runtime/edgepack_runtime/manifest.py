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
    "INTEGER_PRECISIONS",
    "MANIFEST_NAME",
    "TensorSpec",
    "Validation",
    "Accuracy",
    "Artifact",
    "Golden",
    "Manifest",
]

# 2: output-relative validation (cosine), accuracy as fidelity to PyTorch with where it was
# measured, per-artifact build-host latency, the accuracy budget's min_cosine. Readers of
# version 2 still read version 1 bundles: every field added since has a default.
SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
# Precisions that run integer kernels: their numbers depend on the ISA that runs them.
INTEGER_PRECISIONS = ("int8", "dynamic-int8")


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
    # Output-relative checks (schema 2): cosine similarity to PyTorch must reach min_cosine;
    # `tolerance` is a small floor plus a fraction of the reference outputs' range.
    cosine: Optional[float] = None
    min_cosine: Optional[float] = None
    sqnr_db: Optional[float] = None


@dataclass(frozen=True)
class Accuracy:
    """How closely an artifact follows PyTorch on data it was not calibrated on: the eval
    data, or calibration samples held back from calibration. Top-1 only with labels."""

    samples: int
    # Integer kernels differ between ISAs: a figure measured on a host that does not run
    # the target's kernels says little about the device.
    indicative: bool
    top1: Optional[float] = None  # percent, vs the eval labels
    reference_top1: Optional[float] = None  # PyTorch's, same samples
    cosine: Optional[float] = None  # mean cosine similarity of the outputs vs PyTorch's
    sqnr_db: Optional[float] = None
    top1_agreement: Optional[float] = None  # % of samples with PyTorch's arg-max (class-score outputs)
    data: str = "eval"  # "eval" (--eval) or "held-back calibration"
    measured_on: Optional[str] = None  # e.g. "x86_64 (build host)", "aarch64 (qemu cortex-a76)"
    within_budget: Optional[bool] = None  # the manifest's accuracy budget, judged on this figure

    @property
    def drop(self) -> Optional[float]:
        """Top-1 points lost vs PyTorch; None without labels."""
        if self.top1 is None or self.reference_top1 is None:
            return None
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
    # p50 latency measured at build time where the build host runs the target's kernels:
    # {"p50_ms", "threads", "host"}; the default artifact is the fastest accurate one.
    latency: Optional[dict] = None

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
    accuracy_tolerance: float  # the accuracy budget: largest allowed top-1 drop vs PyTorch, in points (labels)
    build: dict = field(default_factory=dict)  # how the bundle was made: host, stage timings
    macs: Optional[int] = None  # multiply-accumulates per inference, counted on the ONNX graph
    # Per input: histogram and per-channel stats of the calibration data (drift.py); None
    # when int8 was calibrated on random data, which is no reference for anything.
    drift_reference: Optional[dict] = None
    # `edgepack build --verify-emulated`: per-artifact results on emulated aarch64 (edgepack/emulate.py)
    emulated: Optional[dict] = None
    # The accuracy budget's other half: smallest mean cosine vs PyTorch (schema 2).
    min_cosine: Optional[float] = None

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
