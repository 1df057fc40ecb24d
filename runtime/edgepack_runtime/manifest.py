"""The bundle manifest: its dataclasses, reader and writer (schema in docs/bundle-format.md).

The runtime owns the schema; the packager builds these same dataclasses and calls
`Manifest.to_json()`, so writer and reader cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .errors import BundleError
from .typed import Problem, did_you_mean, from_data
from .verdict import Verdict, record_fields
from .versions import newer_major, newer_minor, parse_version

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "Dim",
    "TensorSpec",
    "Accuracy",
    "TaskMetric",
    "FileRef",
    "Quantization",
    "Artifact",
    "Latency",
    "Golden",
    "ImageSteps",
    "TextSteps",
    "Preprocessing",
    "Postprocessing",
    "DetectionSettings",
    "MaskSettings",
    "image_steps_problem",
    "Manifest",
]

# "MAJOR.MINOR". A minor release only adds keys with defaults: a reader takes any minor of
# its major, ignoring keys newer than itself, and refuses a newer major (a change it would
# misread). Versions up to 2 were plain integers and read as N.0.
#   1    the first release
#   2    output-relative validation (cosine), accuracy as fidelity to PyTorch, build-host
#        latency, the accuracy budget's min_cosine and min_agreement
#   2.1  dynamic dimensions on inputs and outputs (TensorSpec.dynamic)
#   2.2  raw inputs and answers: preprocessing (image steps, a tokenizer), postprocessing
#        (labels, top-k, embeddings)
#   2.3  the task (classify, detect, embed, generic) and the figures its user sees
#        (Accuracy.metrics, with intervals); detectors: letterbox image steps and
#        detection postprocessing (decode + NMS)
#   2.4  figures out of sample: the quantization search chooses on one part of the judged
#        samples and reports the other (Accuracy.split), intervals rest on independent
#        groups of samples (TaskMetric.groups, Accuracy.groups)
#   2.5  quantization as one typed record (Quantization): the tool, the recipe applied and
#        the ops that stayed float (`float_ops`), where earlier bundles spread the recipe
#        over the table and spelt what stayed float as recipe keys (float_tail, float_prefix)
#        or as groups (float_layers); read into the same record (_quantization_before_2_5)
#        dense outputs: the task segment and its mask postprocessing (MaskSettings)
SCHEMA_VERSION = "2.5"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Dim:
    """A dynamic dimension: `axis` takes any size in [min, max]. Tensors whose dims share a
    `name` share its size (token ids and their attention mask)."""

    name: str
    axis: int
    min: int
    max: int


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: shape, numpy dtype name, and which axes are dynamic.
    `shape` is the size the model was exported and checked at; a dynamic axis takes any
    size in its Dim's range."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    dynamic: tuple[Dim, ...] = ()  # schema 2.1

    def describe(self) -> str:
        dims = {d.axis: d for d in self.dynamic}
        sizes = [f"{dims[i].name}={dims[i].min}..{dims[i].max}" if i in dims else str(n)
                 for i, n in enumerate(self.shape)]
        return f"{self.name}:{'x'.join(sizes)}:{self.dtype}"

    def shape_at(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape with the dynamic dims named in `sizes` at those sizes."""
        shape = list(self.shape)
        for dim in self.dynamic:
            shape[dim.axis] = sizes.get(dim.name, shape[dim.axis])
        return tuple(shape)

    def largest_shape(self) -> tuple[int, ...]:
        """The shape with every dynamic dim at its maximum (size limits)."""
        return self.shape_at({d.name: d.max for d in self.dynamic})

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether a tensor of `shape` is one this spec takes (names shared across tensors aside)."""
        if len(shape) != len(self.shape):
            return False
        dims = {d.axis: d for d in self.dynamic}
        return all(dims[i].min <= n <= dims[i].max if i in dims else n == self.shape[i]
                   for i, n in enumerate(shape))


# What a model's user reads from its outputs, and so what its artifacts are judged by:
# "classify" top-1/top-5 agreement with PyTorch, "detect" boxes after decoding and NMS
# (F1, mAP50 vs PyTorch's detections), "embed" cosine, "generic" cosine per output tensor.


@dataclass(frozen=True)
class TaskMetric:
    """One figure of an artifact vs PyTorch, as its user sees it (schema 2.3), with its 95 %
    interval and what that interval counts. `floor`: the budget's minimum (None: reported
    only). Percent for agreements, 0..1 for F1 and mAP50, -1..1 for cosines."""

    name: str  # "top1_agreement", "top5_agreement", "f1", "map50", "cosine", "cosine:<output>"
    value: float
    low: float
    high: float
    samples: int  # samples (for F1 and mAP50: images)
    floor: Optional[float] = None
    # Schema 2.4: the independent groups the interval rests on (several views of one photo
    # are one group: edgepack_runtime.intervals); None in older bundles: the samples.
    groups: Optional[int] = None

    @property
    def passes(self) -> bool:
        return self.floor is None or self.value >= self.floor

    def describe(self, interval: bool = True) -> str:
        """E.g. "top-1 agree 88.6% [82.1–93.0%, n=132] (needs ≥ 90%)"."""
        label = _METRIC_LABELS.get(self.name) or self.name.replace(":", " of ", 1)
        percent = self.name.endswith("_agreement")

        def number(v: float) -> str:
            if percent:
                return f"{v:.1f}%"
            return f"{v:.3f}" if self.name in ("f1", "map50") else f"{v:.5f}"
        text = f"{label} {number(self.value)}"
        if interval:
            units = f" in {self.groups} groups" if self.groups is not None and self.groups != self.samples else ""
            text += f" [{number(self.low).rstrip('%')}–{number(self.high)}, n={self.samples}{units}]"
        if self.floor is not None and not self.passes:
            text += f" (needs ≥ {self.floor:g}{'%' if percent else ''})"
        return text


_METRIC_LABELS = {"top1_agreement": "top-1 agree", "top5_agreement": "top-5 agree", "f1": "detection F1",
                  "map50": "mAP50", "cosine": "cos"}


@dataclass(frozen=True)
class Accuracy:
    """How closely an artifact follows PyTorch on data it was not calibrated on: the eval
    data, or the calibration samples cross-fitted (each judged by an artifact calibrated
    without it). Top-1 only with labels."""

    samples: int
    # Integer kernels differ between ISAs: a figure measured on a host that does not run
    # the target's kernels says little about the device.
    indicative: bool
    top1: Optional[float] = None  # percent, vs the eval labels
    reference_top1: Optional[float] = None  # PyTorch's, same samples
    cosine: Optional[float] = None  # mean cosine similarity of the outputs vs PyTorch's
    sqnr_db: Optional[float] = None
    top1_agreement: Optional[float] = None  # % of samples with PyTorch's arg-max (class-score outputs)
    data: str = "eval"  # "eval" (--eval), "cross-fitted calibration" ("held-back calibration" before 2.4)
    measured_on: Optional[str] = None  # e.g. "x86_64 (build host)", "aarch64 (qemu cortex-a76)"
    within_budget: Optional[bool] = None  # the manifest's accuracy budget, judged on this figure
    cosine_min: Optional[float] = None  # schema 2.1: the worst sample's cosine vs PyTorch
    # Schema 2.3: the task's figures (TaskMetric), the first the one artifacts are ranked by.
    metrics: tuple[TaskMetric, ...] = ()
    # Schema 2.4: which part of the judged samples these figures come from: "confirmation"
    # (never seen by the search that chose the artifact), "selection" (the part it chose
    # on; only in the search's trail) or None (all of them: nothing was chosen on them).
    split: Optional[str] = None
    groups: Optional[int] = None  # independent groups among the samples

    def metric(self, name: str) -> Optional[TaskMetric]:
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def drop(self) -> Optional[float]:
        """Top-1 points lost vs PyTorch; None without labels."""
        if self.top1 is None or self.reference_top1 is None:
            return None
        return self.reference_top1 - self.top1


@dataclass(frozen=True)
class Latency:
    """A short build-time trial of an artifact: ranks artifacts, it is not a benchmark."""

    p50_ms: float
    threads: int
    host: str  # "arch, cpu" of the build host
    matches_target: bool = False  # the build host ran the target's kernels


@dataclass(frozen=True)
class FileRef:
    """One file of an artifact, relative to the bundle."""

    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Quantization:
    """How a quantized artifact was made (schema 2.5): the `tool` that quantized it, the
    `recipe` of knobs it applied, the ops that stayed float in float weights and activations
    (`float_ops`, as the format names them: ONNX node names, TFLite output tensors), the ISA
    features its kernels rely on, for calibrated precisions the calibration data, and the
    search's trail of every candidate tried."""

    tool: str
    recipe: dict[str, Any] = field(default_factory=dict)
    float_ops: tuple[str, ...] = ()
    relies_on: tuple[str, ...] = ()
    calibration: Optional[str] = None  # "data" (--calibration) or "random"
    calibration_samples: Optional[int] = None
    search: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Artifact:
    """One exported model (or a failed attempt at one): a file, or several."""

    name: str
    format: str
    precision: str
    status: str  # "ok" or "failed"
    path: Optional[str] = None  # the file its backend opens (= files[0])
    sha256: Optional[str] = None
    size_bytes: Optional[int] = None  # of all its files
    error: Optional[str] = None
    quantization: Optional[Quantization] = None  # a free-form table before 2.5, read into this
    layout: Optional[str] = None  # "nhwc": 4-D tensors are channels-last inside the artifact
    validation: Optional[Verdict] = None  # the build's, against PyTorch (recorded as Verdict.to_record)
    accuracy: Optional[Accuracy] = None
    # Where the build host runs the target's kernels, the default artifact is the fastest accurate one.
    latency: Optional[Latency] = None
    # The artifact's own dtype of each integer input its converter changed (litert-torch
    # makes int64 ids int32): run() still takes the manifest's dtype and converts when every
    # value fits.
    input_dtypes: Optional[dict[str, Any]] = None
    # Schema 2.1: every file of the artifact, the one the backend opens first (OpenVINO's
    # .xml then .bin); empty in earlier bundles, where `path` is the only file.
    files: tuple[FileRef, ...] = ()

    def all_files(self) -> tuple[FileRef, ...]:
        """Every file to check and copy: the one at `path` (alone in bundles before 2.1),
        then the others `files` lists."""
        if not self.path:
            return ()
        main = FileRef(path=self.path, sha256=self.sha256 or "", size_bytes=self.size_bytes or 0)
        return (main, *(f for f in self.files if f.path != self.path))

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


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")  # Pillow's filters, as torchvision names them
CHANNELS = ("rgb", "bgr", "gray")
LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class ImageSteps:
    """How an image becomes the input tensor `input`, in this order (torchvision's
    transforms on a PIL image): decode, convert to `channels`, resize, centre crop, to
    float, × scale, − mean, ÷ std, to `layout`, add the batch axis."""

    input: str
    # (): keep the size; (S,): shorter side to S, aspect kept (torchvision's Resize(S));
    # (H, W): exactly H x W.
    resize: tuple[int, ...] = ()
    interpolation: str = "bilinear"
    crop: tuple[int, ...] = ()  # (H, W): centre crop (zero padding first where the image is smaller)
    scale: float = 1 / 255
    mean: tuple[float, ...] = ()  # one per channel; () subtracts nothing
    std: tuple[float, ...] = ()  # one per channel; () divides by nothing
    channels: str = "rgb"  # the colour order the model takes
    layout: str = "nchw"
    # Schema 2.3, detectors: resize (H, W) is a letterbox, as Ultralytics' LetterBox does it
    # (aspect kept, OpenCV's bilinear, centred, borders filled with `pad_value`); no crop.
    letterbox: bool = False
    pad_value: int = 114


@dataclass(frozen=True)
class TextSteps:
    """A Hugging Face tokenizer (tokenizer.json in the bundle) feeding token-id inputs.
    Truncation and padding follow the `ids` input's spec: up to its (dynamic) length."""

    tokenizer: FileRef
    ids: str  # the input taking token ids
    attention_mask: Optional[str] = None
    token_type_ids: Optional[str] = None


@dataclass(frozen=True)
class Preprocessing:
    """What `Model.predict` takes instead of tensors: an image, or a text."""

    image: Optional[ImageSteps] = None
    text: Optional[TextSteps] = None

    @property
    def kind(self) -> str:
        """"image" or "text": what `Model.predict` takes, and the runtime extra that runs it."""
        return "image" if self.image is not None else "text"


def image_steps_problem(steps: ImageSteps) -> Optional[str]:
    """What is wrong with image steps in themselves, or None: the packager says it of a
    --preprocess declaration, the reader of a damaged manifest."""
    for key, allowed in (("interpolation", INTERPOLATIONS), ("channels", CHANNELS), ("layout", LAYOUTS)):
        value = getattr(steps, key)
        if value not in allowed:
            return f"{key}={value!r} is not one of {', '.join(allowed)}; {did_you_mean(value, allowed)}".rstrip("; ")
    if len(steps.resize) > 2 or len(steps.crop) not in (0, 2) or min((*steps.resize, *steps.crop), default=1) < 1:
        return "resize is S (shorter side) or HxW, crop is HxW, all at least 1"
    channels = 1 if steps.channels == "gray" else 3
    for key in ("mean", "std"):
        if len(getattr(steps, key)) not in (0, channels):
            return f"{key} has {len(getattr(steps, key))} values for {channels} channel(s) ({steps.channels})"
    if any(v == 0 for v in steps.std):
        return "std has a 0; every channel needs a non-zero std"
    if steps.letterbox and (len(steps.resize) != 2 or steps.crop):
        return "letterbox needs resize=HxW and no crop"
    if not 0 <= steps.pad_value <= 255:
        return "pad_value must be a pixel value, 0 to 255"
    return None


@dataclass(frozen=True)
class Postprocessing:
    """What `Model.predict` answers with, read from output `output`."""

    output: str
    kind: str  # "classes": top-k (label, score); "embedding": the vector
    softmax: bool = False  # classes: the outputs are logits, scores are their softmax
    normalize: bool = False  # embedding: L2-normalised
    labels: Optional[FileRef] = None  # classes: labels.txt, one per line in class order
    top_k: int = 5
    detection: Optional["DetectionSettings"] = None  # kind "detections" (schema 2.3)
    mask: Optional["MaskSettings"] = None  # kind "mask" (schema 2.5)


@dataclass(frozen=True)
class DetectionSettings:
    """How a detector's raw output becomes boxes (schema 2.3). Layout "yolo": the output is
    [1, 4 + classes, anchors] as Ultralytics' exported head gives it: box centre x, y, width
    and height in input pixels, then each class's score in 0..1. Decoding keeps boxes whose
    best class scores at least `score_threshold`, class-aware NMS drops boxes overlapping a
    better one of the same class by more than `iou_threshold` IoU, and at most
    `max_detections` are kept, best first. Every threshold can be overridden per call."""

    layout: str = "yolo"
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 300


# Postprocessing's fields holding one task's settings (Task.settings_field).
ANSWER_SETTINGS = ("detection", "mask")


@dataclass(frozen=True)
class MaskSettings:
    """How a dense model's map becomes a mask (schema 2.5, task segment): with one channel,
    the pixels above `threshold` (0.5 for probabilities, 0 for logits); with several, each
    pixel's best class."""

    threshold: float = 0.5


DETECTION_LAYOUTS = ("yolo",)


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle says about itself: manifest.json (docs/bundle-format.md)."""

    schema_version: str  # "MAJOR.MINOR" (an integer N in bundles before 2.1)
    name: str
    created: str
    target: dict[str, Any]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    artifacts: tuple[Artifact, ...]
    golden: Golden
    toolchain: dict[str, Any]
    accuracy_tolerance: float  # the accuracy budget: largest allowed top-1 drop vs PyTorch, in points (labels)
    build: dict[str, Any] = field(default_factory=dict)  # how the bundle was made: host, stage timings
    macs: Optional[int] = None  # multiply-accumulates per inference at the built size (PyTorch's flop counter)
    # Per input: histogram and per-channel stats of the calibration data (drift.py); None
    # when int8 was calibrated on random data, which is no reference for anything.
    drift_reference: Optional[dict[str, Any]] = None
    # `edgepack build --verify-emulated`: per-artifact results on emulated aarch64 (edgepack/emulate.py)
    emulated: Optional[dict[str, Any]] = None
    # The rest of the accuracy budget (schema 2): smallest mean cosine vs PyTorch, smallest
    # top-1 agreement with PyTorch in percent (0: not required).
    min_cosine: Optional[float] = None
    min_agreement: float = 0.0
    # Schema 2.2: raw inputs in (an image, a text), answers out (labels, an embedding).
    preprocessing: Optional[Preprocessing] = None
    postprocessing: Optional[Postprocessing] = None
    # Schema 2.3: what the outputs are for (TASKS), which decides the figures artifacts are judged by.
    task: Optional[str] = None

    def data_files(self) -> tuple[FileRef, ...]:
        """The bundle's files besides the artifacts and the golden data: labels, tokenizer."""
        files = []
        if self.preprocessing is not None and self.preprocessing.text is not None:
            files.append(self.preprocessing.text.tokenizer)
        if self.postprocessing is not None and self.postprocessing.labels is not None:
            files.append(self.postprocessing.labels)
        return tuple(files)

    def artifact(self, name: str) -> Artifact:
        for art in self.artifacts:
            if art.name == name:
                return art
        known = ", ".join(a.name for a in self.artifacts) or "none"
        raise BundleError(
            f"bundle {self.name!r} has no artifact {name!r}; its artifacts are: {known}"
        )

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for art, written in zip(self.artifacts, data["artifacts"]):
            if art.validation is not None:
                written["validation"] = art.validation.to_record()
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        if len(text) > MAX_MANIFEST_CHARS:
            raise BundleError(f"{MANIFEST_NAME} is {len(text)} characters, more than any bundle writes "
                              f"({MAX_MANIFEST_CHARS}); the bundle is damaged, rebuild it")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # bad JSON, an absurd integer, absurd nesting
            raise BundleError(
                f"{MANIFEST_NAME} is not valid JSON ({str(exc)[:200]}); rebuild the bundle with `edgepack build`"
            ) from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        if not isinstance(data, dict):
            raise BundleError(f"{MANIFEST_NAME} must hold a JSON object; rebuild the bundle")
        version = parse_version(data.get("schema_version"))
        if version is None:
            raise BundleError(f"{MANIFEST_NAME} has no valid schema_version (\"MAJOR.MINOR\", e.g. "
                              f"{SCHEMA_VERSION!r}); rebuild the bundle")
        if newer_major(version, SCHEMA_VERSION):
            raise BundleError(
                f"bundle schema_version {data['schema_version']} is newer than this runtime understands "
                f"({SCHEMA_VERSION}); upgrade edgepack-runtime"
            )
        if version < QUANTIZATION_TYPED and isinstance(data.get("artifacts"), list):
            data = {**data, "artifacts": [_quantization_before_2_5(a) for a in data["artifacts"]]}
        # Keys from a newer minor are ignored; within what this reader knows, unknown keys are damage.
        newer = newer_minor(version, SCHEMA_VERSION)
        try:
            read = {**_verdicts_read(data, newer), "schema_version": f"{version[0]}.{version[1]}"}
            manifest: Manifest = from_data(cls, read, "manifest", tolerate_unknown=newer, check=_check_ranges)
        except Problem as problem:
            raise _damaged(problem.where, problem.problem) from problem
        _check_target(manifest.target)
        _check_names(manifest)
        from .tasks import TASKS

        if manifest.task is not None and manifest.task not in TASKS:
            raise _damaged("task", f"is {manifest.task[:20]!r}, not one of {', '.join(TASKS)}")
        return manifest


QUANTIZATION_TYPED = (2, 5)
# Keys of an artifact's quantization table before 2.5 that are the Quantization's own; every
# other key was a knob of the recipe (with float_layers: groups of ops kept float).
_QUANTIZATION_FIELDS = ("tool", "relies_on", "calibration", "calibration_samples", "search")


def _quantization_before_2_5(artifact: Any) -> Any:
    """An artifact of a bundle before 2.5 with its quantization table read as a Quantization:
    the recipe's knobs gathered under `recipe`, the `float_layers` groups as `float_ops`.
    The old recipe keys that asked for a tail or a prefix (`float_tail`, `float_prefix`)
    named no ops: they stay among the recipe's knobs, as those bundles recorded them."""
    old = artifact.get("quantization") if isinstance(artifact, dict) else None
    if not isinstance(old, dict):
        return artifact  # none, or damage the reader reports
    if set(old) <= {f.name for f in dataclasses.fields(Quantization)} and isinstance(old.get("recipe", {}), dict):
        return artifact  # already the record (this reader's own output of an old bundle): read as it is
    groups = old.get("float_layers", [])
    flat = isinstance(groups, list) and all(isinstance(g, list) and all(isinstance(n, str) for n in g) for g in groups)
    recipe = {k: v for k, v in old.items() if k not in _QUANTIZATION_FIELDS and not (k == "float_layers" and flat)}
    known = {k: old[k] for k in _QUANTIZATION_FIELDS if k in old}
    return {**artifact, "quantization": {"tool": "", **known, "recipe": recipe,
                                         "float_ops": [n for g in groups for n in g] if flat else []}}


# Far above any real manifest (a few KiB; the search trail adds tens of KiB), far below
# what would strain a Pi's memory.
MAX_MANIFEST_CHARS = 8 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STATUSES = ("ok", "failed", "rejected")


def _damaged(where: str, problem: str) -> BundleError:
    return BundleError(f"{MANIFEST_NAME}: {where} {problem}; the bundle is damaged or from an incompatible "
                       "edgepack, rebuild it")


def _verdicts_read(data: dict[str, Any], tolerate_unknown: bool) -> dict[str, Any]:
    """`data` with each artifact's recorded validation as the fields of its Verdict."""
    artifacts = data.get("artifacts")
    if not isinstance(artifacts, list):
        return data  # from_data refuses it
    read = [{**art, "validation": record_fields(art["validation"], art.get("name"),
                                                f"manifest.artifacts[{i}].validation", tolerate_unknown)}
            if isinstance(art, dict) and art.get("validation") is not None else art
            for i, art in enumerate(artifacts)]
    return {**data, "artifacts": read}


def _check_ranges(obj: Any, where: str) -> None:
    """What types alone do not say."""
    if isinstance(obj, TensorSpec):
        try:
            dtype = np.dtype(obj.dtype)
        except TypeError:
            raise _damaged(where, f"has dtype {obj.dtype[:40]!r}, not a numpy dtype") from None
        if dtype.kind not in "biuf" or any(d < 1 for d in obj.shape):
            raise _damaged(where, "needs a numeric dtype and dimensions of at least 1")
        axes = [d.axis for d in obj.dynamic]
        if len(set(axes)) != len(axes) or not all(
                d.axis < len(obj.shape) and 1 <= d.min <= obj.shape[d.axis] <= d.max for d in obj.dynamic):
            raise _damaged(where, "has a dynamic dim off its shape, twice on one axis, or min ≤ size ≤ max broken")
    elif isinstance(obj, Artifact):
        if obj.status not in _STATUSES:
            raise _damaged(where, f"has status {obj.status[:20]!r}, not one of {', '.join(_STATUSES)}")
        if obj.status == "ok" and not (obj.path and obj.sha256 and _SHA256.match(obj.sha256)):
            raise _damaged(where, "is ok but lacks a path or a sha256 of 64 hex digits")
    elif isinstance(obj, FileRef):
        if not _SHA256.match(obj.sha256):
            raise _damaged(where, "needs a sha256 of 64 hex digits")
    elif isinstance(obj, ImageSteps):
        problem = image_steps_problem(obj)
        if problem is not None:
            raise _damaged(where, f"is wrong: {problem}")
    elif isinstance(obj, Postprocessing):
        from .tasks import answer_kinds, answering

        kinds = answer_kinds()
        if obj.kind not in kinds or obj.top_k < 1:
            raise _damaged(where, f"needs kind in {kinds} and top_k ≥ 1")
        settings = answering(obj.kind).settings_field
        given = [name for name in ANSWER_SETTINGS if getattr(obj, name) is not None]
        if given != ([settings] if settings else []):
            raise _damaged(where, f"of kind {obj.kind} needs settings {settings or 'none'}, has {given or 'none'}")
    elif isinstance(obj, MaskSettings):
        if not math.isfinite(obj.threshold):
            raise _damaged(where, "needs a finite threshold")
    elif isinstance(obj, DetectionSettings):
        if (obj.layout not in DETECTION_LAYOUTS or not 0 <= obj.score_threshold <= 1
                or not 0 <= obj.iou_threshold <= 1 or obj.max_detections < 1):
            raise _damaged(where, f"needs layout in {DETECTION_LAYOUTS}, thresholds in 0..1 and max_detections ≥ 1")
    elif isinstance(obj, Golden):
        if not _SHA256.match(obj.sha256) or obj.real_samples > obj.samples:
            raise _damaged(where, "needs a sha256 of 64 hex digits and real_samples ≤ samples")


def _check_names(manifest: Manifest) -> None:
    """Pre- and postprocessing name tensors the manifest has."""
    inputs, outputs = {s.name for s in manifest.inputs}, {s.name for s in manifest.outputs}
    pre, post = manifest.preprocessing, manifest.postprocessing
    named = []
    if pre is not None and pre.image is not None:
        named.append(("preprocessing.image.input", pre.image.input, inputs))
    if pre is not None and pre.text is not None:
        named += [(f"preprocessing.text.{k}", getattr(pre.text, k), inputs)
                  for k in ("ids", "attention_mask", "token_type_ids") if getattr(pre.text, k) is not None]
    if post is not None:
        named.append(("postprocessing.output", post.output, outputs))
    for where, name, known in named:
        if name not in known:
            raise _damaged(where, f"names {name[:40]!r}, which is not one of the model's tensors")


def _check_target(target: dict[str, Any]) -> None:
    """The profile keys the runtime reads (threads, prefer, formats)."""
    threads = target.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise _damaged("target.threads", "must be a positive integer")
    for key in ("prefer", "formats"):
        if not isinstance(target.get(key, []), list) or not all(isinstance(v, str) for v in target.get(key, [])):
            raise _damaged(f"target.{key}", "must be a list of strings")
