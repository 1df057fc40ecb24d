"""The build as stages over one BuildContext: plan → load → reference → declare → per
format (export → quantize/search → validate) → time → write → check and commit. No
format-specific code here."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Sequence, TypeVar, Union

import numpy as np

import edgepack_runtime
from edgepack_runtime.bundle import GOLDEN_ARTIFACT_PREFIX, GOLDEN_INPUT_PREFIX, GOLDEN_OUTPUT_PREFIX, sha256_file
from edgepack_runtime.drift import reference_stats
from edgepack_runtime.hostinfo import HostInfo, host_info
from edgepack_runtime.intervals import groups_to_promise
from edgepack_runtime.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Accuracy,
    Artifact,
    FileRef,
    Golden,
    ImageSteps,
    Latency,
    Manifest,
    Quantization,
    TensorSpec,
)
from edgepack_runtime.parity import run_samples
from edgepack_runtime.precision import BASE, Precision
from edgepack_runtime.precision import precision as precision_named
from edgepack_runtime.signature import sign_bundle
from edgepack_runtime.task_fidelity import headline
from edgepack_runtime.typed import from_data
from edgepack_runtime.verdict import Verdict, figure_text

from . import __version__
from .budget import Budget
from .bundle_writer import BundleStaging
from .closeness import clearly_closer
from .errors import BuildError, BuildFailed, ModelSourceError, TargetError, mapped
from .formats import ATTENTION, Exported, QuantResult, artifact_files, get_format, remove_artifact, supports
from .holdout import CONFIRMATION, HALVES
from .macs import count_macs
from .model_source import LoadedModel, load_model
from .raw_io import RawIO, declare, image_steps
from .request import BuildRequest, InputsRequest, describe_options
from .samples import golden_inputs, load_samples, random_samples, settle_shapes
from .search import SearchContext, search
from .shared_work import SharedWork, bundle_folder
from .targets import TargetProfile, load_target
from .task import ModelTask, infer_task
from .validate import (
    Evaluation,
    References,
    clearly_faster,
    compare_latency,
    open_artifact,
    torch_references,
    validate_artifact,
)

if TYPE_CHECKING:
    import torch

__all__ = ["build", "build_from", "BuildRequest", "BuildResult", "BuildFailed"]

# Warnings (e.g. int8 calibrated on random data) and, at INFO, each stage as it starts:
# the CLI shows them (-q: errors only, -v: stages, -vv: the converters' own output too).
log = logging.getLogger(__name__)

GOLDEN_FILE = "golden.npz"
RANDOM_CALIBRATION_SAMPLES = 32
RANDOM_CALIBRATION_SEED = 7
CROSSFITTED = "cross-fitted calibration"  # Accuracy.data without --eval (holdout.py)
# Choosing on some judged samples and confirming on others needs a few of each.
MIN_JUDGED_SAMPLES = 8
MIN_JUDGED_GROUPS = 2


@dataclass
class BuildResult:
    """What `build` made: the manifest (also when nothing was written) and why it failed."""

    manifest: Manifest
    path: Optional[Path]
    problems: list[str] = field(default_factory=list)


@contextmanager
def _timed(seconds: dict, stage: str):
    log.info(stage)  # progress: the CLI shows the stage under way
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - start, 3)


def _choose(requested: Optional[Sequence[str]], allowed: Sequence[str], what: str, target_id: str) -> list[str]:
    if not requested:
        return list(allowed)
    bad = [r for r in requested if r not in allowed]
    if bad:
        raise TargetError(
            f"{what} {', '.join(bad)} not available for target {target_id} (it offers {', '.join(allowed)}); "
            f"pick from those or choose another --target"
        )
    return list(dict.fromkeys(requested))


def build(
    model: Union[str, "torch.nn.Module"],
    output: Union[str, Path],
    target: Union[str, Sequence[str]] = "host",
    **options: Any,
) -> Union[BuildResult, list[BuildResult]]:
    """Build a bundle for `target` from `model` into the directory `output`.

    `model` is a torch.nn.Module, or "FILE.py:FACTORY" as on the command line. `inputs`
    are example inputs `{name: tensor or array}` (their shapes and dtypes), or `--input`
    spec strings, which may declare dynamic dims ("ids:1xseq=1..128:int64"). `calibration`
    and `eval_data` are `{input name: [N, ...] array or tensor}` (eval may add integer
    `labels`) or .npz paths holding the same.

    The accuracy budget speaks the model's `task` (edgepack_runtime.tasks: "classify", "detect",
    "embed", "segment" or "generic"; inferred from `postprocess`/`labels` and the outputs when None):
    a classifier keeps ≥ `min_agreement` % top-1 agreement with PyTorch, a detector a
    detection F1 ≥ `min_f1` against PyTorch's detections after NMS, an embedding (and each
    output of any other model) a mean cosine ≥ `min_cosine`; with eval labels at most
    `max_accuracy_drop` top-1 points are lost. Measured on `eval_data` or, without it, on
    the calibration samples cross-fitted. Quantized precisions search the
    target's recipes and report figures from samples the choice did not see (search.py,
    holdout.py).

    Raw inputs and answers (docs/raw-inputs.md): `preprocess` declares how an image becomes
    the input tensor (a spec like "imagenet" or "resize=256 crop=224 mean=... std=...", a
    .toml file with an [image] table, or a dict of the same keys); `tokenizer` is the
    tokenizer.json that turns texts into token ids; `labels` a text file of class names,
    one per line; `postprocess` "classes" (the default with labels), "embedding" or
    "normalized-embedding". The runtime's `Model.predict()` then takes images or texts.

    `prefer` picks the int8 candidate among those within budget (search.py): "balanced"
    (the fastest as faithful as the best within its noise), "accuracy" or "speed". Every
    int8 figure comes from judged samples the search did not choose on (holdout.py).

    `sign`: an elliptic-curve private key (PEM) that signs the finished bundle
    (bundle.sig, the OpenSSF model-signing format; docs/fleet.md).

    An artifact of a precision from the target's profile that fails to build or misses
    its checks is left out (`rejected` in the manifest, with why); one of a precision named
    in `precisions` (every one with `strict`) fails the build instead, unless
    `allow_partial` (leave it out too) or `allow_mismatch` (write it anyway).

    Returns the BuildResult; raises BuildFailed (with the result) when a required artifact
    fails, or no artifact is left to ship. Nothing is written at `output` when it raises.
    `target` may list several targets: one bundle per target is written into `output`
    (`raspberry-pi/5` → `output/raspberry-pi-5/`), sharing the model's load, PyTorch's
    references and the work the targets agree on, and a list of BuildResults (one per
    target, in order) is returned.

    The same as `build_from` with the arguments as a BuildRequest (edgepack/request.py).
    `options` are the keywords below (request.OPTIONS, also `edgepack build`'s flags); an
    unknown one raises UsageError naming them.
    """
    targets = [target] if isinstance(target, str) else list(dict.fromkeys(target))
    if not targets:
        raise TargetError("no target given; name one, e.g. target='host' (see `edgepack targets`)")
    request = BuildRequest.of(model, output, targets[0], **options)
    return build_from(request) if len(targets) == 1 else build_targets(request, targets)


build.__doc__ = (build.__doc__ or "") + describe_options()


@dataclass
class BuildContext:
    """What the stages of one build share; each stage fills in its part."""

    request: BuildRequest
    profile: TargetProfile
    plan: dict[str, list[str]]  # format -> precisions to build
    host: HostInfo
    staging: BundleStaging
    seconds: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)
    # load
    loaded: Optional[LoadedModel] = None
    inputs: Optional[InputsRequest] = None  # the request's, completed by a self-describing source
    steps: Optional[ImageSteps] = None  # image steps, when images become the input tensors
    calibration: Optional[_Calibration] = None
    samples: Optional[_Samples] = None  # what the reference stage runs
    # reference
    refs: Optional[References] = None
    macs: Optional[int] = None
    raw_io: Optional[RawIO] = None
    task: Optional[ModelTask] = None
    budget: Optional[Budget] = None
    # per format
    artifacts: list[Artifact] = field(default_factory=list)
    toolchain: dict[str, str] = field(default_factory=dict)
    errors: dict[str, np.ndarray] = field(default_factory=dict)  # quantized artifact -> its group errors (closeness.py)
    shared: Optional[SharedWork] = None  # a multi-target build's common work
    timings: dict[str, dict] = field(default_factory=dict)  # artifact -> its latency, rounds included

    def timed(self, stage: str):
        return _timed(self.seconds, stage)

    # What the load and reference stages made, for the stages after them (BuildError if a
    # stage runs before the one that makes its part).
    @property
    def model(self) -> LoadedModel:
        return _made(self.loaded, "the loaded model")

    @property
    def given(self) -> InputsRequest:
        return _made(self.inputs, "the completed inputs request")

    @property
    def calibration_set(self) -> _Calibration:
        return _made(self.calibration, "the calibration samples")

    @property
    def references(self) -> References:
        return _made(self.refs, "PyTorch's references")

    @property
    def declared(self) -> RawIO:
        return _made(self.raw_io, "the raw inputs and answers")

    @property
    def judged_as(self) -> ModelTask:
        return _made(self.task, "the task")

    @property
    def floors(self) -> Budget:
        return _made(self.budget, "the accuracy budget")


_T = TypeVar("_T")


def _made(value: Optional[_T], what: str) -> _T:
    if value is None:
        raise BuildError(f"{what} is used before the build stage that makes it")
    return value


def build_from(request: BuildRequest) -> BuildResult:
    """Build the bundle `request` asks for: load → reference → per format (export →
    quantize/search → validate) → time → write → check. See `build` for what it does."""
    return _build(_plan(request))


def build_targets(request: BuildRequest, targets: Sequence[str]) -> list[BuildResult]:
    """One bundle per target in `request`'s output folder (`raspberry-pi/5` → `raspberry-pi-5/`),
    sharing the model, its references, and the exports and searches the targets agree on
    (shared_work.py). Every target and destination is checked before any work. A target
    whose build fails does not stop the others; BuildFailed then says which failed."""
    root = Path(request.output.path)
    if (root / MANIFEST_NAME).exists():
        raise BuildError(f"{root} is a bundle; a build for several targets writes one bundle per target into a "
                         "folder: choose another -o")
    name, targets = request.output.name or root.name, list(dict.fromkeys(targets))
    folders = [bundle_folder(target) for target in targets]
    if len(set(folders)) < len(folders):
        raise TargetError(f"targets {', '.join(targets)} would write the same folder in {root}; build them apart")
    contexts = [_plan(dataclasses.replace(request, target=target, output=dataclasses.replace(
        request.output, path=root / folder, name=name))) for target, folder in zip(targets, folders, strict=True)]
    shared = SharedWork()
    results: list[BuildResult] = []
    failed: list[tuple[str, Optional[BuildResult]]] = []
    for ctx in contexts:
        ctx.shared = shared
        try:
            results.append(_build(ctx))
        except BuildFailed as exc:
            failed.append((f"{ctx.request.target}: {exc}", exc.result))
            results.append(exc.result)
        except BuildError as exc:  # no bundle for this target; the others still build
            failed.append((f"{ctx.request.target}: {exc}", None))
    if failed:
        written = [str(r.path) for r in results if r.path is not None]
        message = "; ".join(why for why, _ in failed) + (f" (written: {', '.join(written)})" if written else "")
        first = next((r for _, r in failed if r is not None), results[0] if results else None)
        raise BuildFailed(message, first, results)
    return results


def _build(ctx: BuildContext) -> BuildResult:
    ctx.start = time.perf_counter()  # a multi-target build plans every target first: each counts its own
    shared = ctx.shared
    if shared is not None and shared.first is not None:
        _adopt(ctx, shared.first)
    else:
        with ctx.timed("load"):
            _load(ctx)
        with ctx.timed("reference"):
            _reference(ctx)
        _declare(ctx)
        if shared is not None:
            shared.first = ctx
    with ctx.staging:
        for fmt_name, precisions in ctx.plan.items():
            fmt = get_format(fmt_name)
            ctx.toolchain.update(fmt.toolchain())
            ctx.artifacts += _build_format(ctx, fmt, precisions)
        with ctx.timed("latency"):
            ctx.artifacts, ctx.timings = _time_artifacts(ctx.artifacts, ctx.profile, ctx.host, ctx.references,
                                                         ctx.staging.path, ctx.shared)
        manifest = _write(ctx)
        return _check_and_commit(ctx, manifest)


def _plan(request: BuildRequest) -> BuildContext:
    """The target, and which precisions of which formats to build: the profile's by
    default; on request, any the formats can build."""
    profile = load_target(request.target)
    formats = _choose(request.formats, profile.formats, "format", profile.id)
    precisions = request.precisions
    offered = {f: list(get_format(f).precisions if precisions else profile.settings(f).precisions) for f in formats}
    _choose(precisions, sorted({p for ps in offered.values() for p in ps}), "precision", profile.id)
    plan = {f: [p for p in ps if not precisions or p in precisions] for f, ps in offered.items()}
    staging = BundleStaging(Path(request.output.path))  # refuses a non-bundle destination before any work
    toolchain = {"edgepack": __version__, "edgepack-runtime": edgepack_runtime.__version__,
                 "python": platform.python_version()}
    return BuildContext(request, profile, plan, host_info(), staging, toolchain=toolchain)


def _adopt(ctx: BuildContext, first: BuildContext) -> None:
    """Another target of a multi-target build: the model, samples, references and task the
    first one loaded and computed (none of them depends on the target)."""
    for name in ("loaded", "inputs", "steps", "calibration", "samples", "refs", "macs", "raw_io", "task", "budget"):
        setattr(ctx, name, getattr(first, name))


def _load(ctx: BuildContext) -> None:
    """The model, and the samples it is calibrated, checked and judged on."""
    model, given = ctx.request.model, ctx.request.inputs
    ctx.loaded = loaded = load_model(model.model, weights=model.weights, inputs=given.inputs,
                                     trust_checkpoint=model.trust_checkpoint)
    # A self-describing source (an Ultralytics checkpoint) fills in what the user left unsaid.
    source = loaded.defaults
    ctx.inputs = completed = dataclasses.replace(
        given,
        preprocess=source.preprocess if given.preprocess is None and given.tokenizer is None else given.preprocess,
        postprocess=given.postprocess or source.postprocess,
        labels=given.labels if given.labels is not None else source.labels or None)
    # Known before the samples load: a folder of images becomes tensors through these steps.
    ctx.steps = image_steps(completed.preprocess, loaded.inputs) if completed.preprocess is not None else None
    quantized = any(p != BASE for ps in ctx.plan.values() for p in ps)
    data = ctx.request.data
    specs, golden, ctx.calibration, evaluation = _samples(loaded.inputs, data.calibration, data.eval_data, quantized,
                                                          ctx.steps)
    ctx.samples = (specs, golden, evaluation)


def _reference(ctx: BuildContext) -> None:
    """PyTorch's outputs: what every artifact is checked against."""
    specs, (golden, real), evaluation = _made(ctx.samples, "the samples")
    module = ctx.model.module
    ctx.refs = refs = torch_references(module, specs, golden, real, evaluation[:3], groups=evaluation.groups,
                                       crossfit=evaluation.crossfit)
    ctx.macs = count_macs(module, specs, {k: v[0] for k, v in refs.golden_inputs.items()})


def _declare(ctx: BuildContext) -> None:
    """Raw inputs and answers, the task and its budget. Before the long conversions: a
    pipeline or labels that cannot fit fail the build in seconds."""
    refs, given, wanted = ctx.references, ctx.given, ctx.request.budget
    ctx.raw_io = raw_io = declare(refs.inputs, refs.outputs, refs.golden_outputs, preprocess=ctx.steps,
                                  tokenizer=given.tokenizer, labels=given.labels, postprocess=given.postprocess,
                                  detection=ctx.model.defaults.detection)
    ctx.task = task = infer_task(wanted.task, raw_io.postprocessing, refs.outputs, refs.golden_outputs,
                                 wanted.mask_threshold)
    ctx.budget = Budget(max_top1_drop=wanted.max_accuracy_drop, min_cosine=wanted.min_cosine,
                        min_agreement=wanted.min_agreement, min_f1=wanted.min_f1, min_iou=wanted.min_iou,
                        task=task.name, answer=task.answer)


def _write(ctx: BuildContext) -> Manifest:
    """The golden file, the raw-io files and the manifest, into the staging directory."""
    refs, out_dir, wanted, raw_io = ctx.references, ctx.staging.path, ctx.request.budget, ctx.declared
    raw_io.write(out_dir)
    golden_path = out_dir / GOLDEN_FILE
    np.savez(golden_path,
             **{GOLDEN_INPUT_PREFIX + k: v for k, v in refs.golden_inputs.items()},
             **{GOLDEN_OUTPUT_PREFIX + k: v for k, v in refs.golden_outputs.items()},
             **_own_outputs(ctx.artifacts, ctx.profile, refs, out_dir),
             allow_pickle=True)  # numpy's default, named: no array is taken for it
    calibration = ctx.calibration_set
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=ctx.request.output.name or ctx.staging.dest.name,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        target=ctx.profile.to_dict(),
        inputs=refs.inputs,
        outputs=refs.outputs,
        artifacts=tuple(ctx.artifacts),
        golden=Golden(path=GOLDEN_FILE, sha256=sha256_file(golden_path),
                      samples=len(next(iter(refs.golden_inputs.values()))), real_samples=refs.real_samples),
        toolchain=ctx.toolchain,
        accuracy_tolerance=wanted.max_accuracy_drop,
        min_cosine=wanted.min_cosine,
        min_agreement=wanted.min_agreement,
        build={"model": ctx.model.source, "host": ctx.host.to_dict(), "seconds": ctx.seconds,
               **({"meta": {str(k): str(v) for k, v in ctx.request.output.meta.items()}}
                  if ctx.request.output.meta else {})},
        macs=ctx.macs,
        drift_reference=({k: reference_stats(v) for k, v in calibration.samples.items()}
                         if calibration.source == "data" else None),
        preprocessing=raw_io.preprocessing,
        postprocessing=ctx.judged_as.answer,  # the declared one, or the task's default (a mask)
        task=ctx.judged_as.name,
    )
    (out_dir / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _check_and_commit(ctx: BuildContext, manifest: Manifest) -> BuildResult:
    """Emulate if asked, leave out what misses, and write the bundle at -o unless a
    required artifact failed (BuildFailed then, nothing written)."""
    out, staged = ctx.request.output, ctx.staging.path
    # Precisions the user named must all ship; --strict extends that to the profile's.
    required = set() if out.allow_partial else _all(manifest) if out.strict else set(ctx.request.precisions or ())
    if ctx.request.verify_emulated:
        manifest = _emulate(manifest, ctx.profile, staged, ctx.seconds, ctx.references, ctx.floors)
    if not out.allow_mismatch:
        # Artifacts the user asked for by name must all ship (unless --allow-partial);
        # the profile's others are left out when they miss, with the reason in the table.
        named = set(ctx.request.precisions or ())  # asked for by name: never left out for another artifact
        dominated = _dominated(manifest, ctx.timings, ctx.errors) if ctx.calibration_set.source == "data" else {}
        manifest = _leave_out(manifest, staged, keep=lambda art: art.precision in required,
                              dominated={n: why for n, why in dominated.items()
                                         if manifest.artifact(n).precision not in named})
    for art in manifest.artifacts:
        if art.status == "ok" and (note := _too_little_data(art)):
            log.warning(note)
    ctx.seconds["total"] = round(time.perf_counter() - ctx.start, 3)  # the manifest's build dict holds `seconds`
    (staged / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    result = BuildResult(manifest=manifest, path=None, problems=_problems(manifest, out.allow_mismatch, required))
    if result.problems:
        raise BuildFailed("; ".join(result.problems) + "; nothing was written", result)
    if ctx.request.signing is not None:
        sign_bundle(staged, ctx.request.signing.key)
    result.path = ctx.staging.commit()
    return result


class _Calibration(NamedTuple):
    samples: dict[str, np.ndarray]  # [N, *shape] per input
    source: str  # "data" (--calibration) or "random"


class _Judged(NamedTuple):
    """The samples artifacts are judged on, before PyTorch has run them (validate.Evaluation after)."""

    inputs: dict[str, np.ndarray]
    labels: Optional[np.ndarray]
    source: str  # "eval", CROSSFITTED or "random"
    groups: Optional[np.ndarray]
    crossfit: bool


# The input specs, the golden inputs and how many are real, and the judged samples.
_Samples = tuple[tuple[TensorSpec, ...], tuple[dict[str, np.ndarray], int], _Judged]


def _samples(specs, calibration, eval_data, quantized: bool, steps=None):
    """The input specs (dynamic dims at the calibration data's size), the golden inputs (and
    how many are real), the calibration samples and the samples accuracy is judged on:
    --eval, else the calibration samples themselves, cross-fitted (holdout.py)."""
    calib, _, calib_groups = (load_samples(calibration, specs, image_steps=steps) if calibration is not None
                              else (None, None, None))
    if calib is not None:
        specs = settle_shapes(specs, calib)
    evaluation = None
    if eval_data is not None:
        inputs, labels, groups = load_samples(eval_data, specs, evaluation=True, image_steps=steps)
        evaluation = _Judged(inputs, labels, "eval", groups, crossfit=False)
    golden = golden_inputs(specs, calib)
    if calib is None:
        if quantized:
            log.warning("no --calibration data: int8 artifacts are calibrated on RANDOM inputs and their accuracy "
                 "is meaningless; pass --calibration calib.npz with real samples")
        random = _Calibration(random_samples(specs, RANDOM_CALIBRATION_SAMPLES, RANDOM_CALIBRATION_SEED), "random")
        held_out = random_samples(specs, RANDOM_CALIBRATION_SAMPLES, RANDOM_CALIBRATION_SEED + 1)
        return specs, golden, random, evaluation or _Judged(held_out, None, "random", None, crossfit=False)
    if evaluation is None:
        evaluation = _Judged(calib, None, CROSSFITTED, calib_groups, crossfit=True)
    if quantized:
        count = len(next(iter(evaluation.inputs.values())))
        group_count = len(np.unique(evaluation.groups)) if evaluation.groups is not None else count
        role = "--eval" if eval_data is not None else "--calibration"
        if count < MIN_JUDGED_SAMPLES or group_count < MIN_JUDGED_GROUPS:
            raise ModelSourceError(
                f"{role} has {count} samples in {group_count} groups: too few to choose int8 on some and confirm it on "
                f"others (needs {MIN_JUDGED_SAMPLES} samples in {MIN_JUDGED_GROUPS}+ groups); give more samples"
                + ("" if eval_data is not None else ", or pass --eval eval.npz"))
    return specs, golden, _Calibration(calib, "data"), evaluation


def _build_format(ctx: BuildContext, fmt, names: list[str]) -> list[Artifact]:
    """Export one format to fp32, derive its other precisions from that file, validate each.
    Precisions from the profile (none named) may be added to for the model."""
    out_dir = ctx.staging.path
    fp32_file = out_dir / f"model.{BASE}{fmt.suffix}"
    precisions = [precision_named(name) for name in names]
    exported: Optional[Exported] = None
    export_error = None

    def export() -> Exported:
        refs = ctx.references
        made = fmt.export(ctx.model.module, refs.inputs, [s.name for s in refs.outputs], ctx.profile, fp32_file)
        if not isinstance(made, Exported):
            raise BuildError(f"format {fmt.name}'s export() returned {type(made).__name__}, not an "
                             "edgepack.formats.Exported; return Exported(out, graph) (docs/extending.md)")
        return made

    try:
        with ctx.timed(f"{fmt.name}.export"):
            if ctx.shared is None:
                exported = export()
            else:  # made by the first target that asked: its files are copied here
                shared = ctx.shared.reuse((fmt.name, fmt.export_key(ctx.profile)), fmt, fp32_file, export)
                exported = shared.at(fp32_file)
    except BuildError as exc:
        export_error = str(exc)
    attention = (not ctx.request.precisions and not ctx.request.output.strict and not export_error
                 and _has_attention(fmt, precisions, fp32_file))
    if attention:
        # Dynamic int8 first: when it holds, static int8 (whose recipes were made for CNNs and
        # destroy attention: all-MiniLM-L6-v2's best of 16 candidates reached cosine 0.72) is not tried.
        dynamic = _dynamic(fmt)
        log.info(f"{fmt.name}: the model has attention (matmuls of two activations, softmax): adding "
                 f"{', '.join(p.name for p in dynamic)}")
        precisions = ([p for p in precisions if not p.calibrated] + dynamic
                      + [p for p in precisions if p.calibrated])
    artifacts: list[Artifact] = []
    for precision in precisions:
        holds = [a.name for a in artifacts if precision_named(a.precision).dynamic and a.status == "ok"
                 and a.validation.passed and a.accuracy is not None and a.accuracy.within_budget]
        if attention and precision.calibrated and holds:
            artifacts.append(Artifact(
                name=f"{fmt.name}-{precision.name}", format=fmt.name, precision=precision.name, status="rejected",
                error=f"not tried: the model has attention and {holds[0]} holds its floors; static {precision.name} "
                      f"recipes made for CNNs lose attention's outputs (ask for it with --precisions {precision.name} "
                      "to try it anyway)"))
            continue
        artifacts.append(_build_precision(ctx, fmt, precision, exported, export_error))
    for stale in out_dir.glob(f"model.{BASE}.*{fmt.suffix}"):
        stale.unlink()  # intermediate files of the search (e.g. the bias-corrected float model)
    if BASE not in names:
        remove_artifact(fmt, fp32_file)  # only the base for the other precisions: not part of the bundle
    return artifacts


def _build_precision(ctx: BuildContext, fmt, precision: Precision, exported: Optional[Exported],
                     export_error: Optional[str]) -> Artifact:
    """One artifact: the exported base validated, or another precision quantized from it
    (searching the target's recipes); `failed` with why when it cannot be built."""
    name, file = f"{fmt.name}-{precision.name}", ctx.staging.path / f"model.{precision.name}{fmt.suffix}"
    layout = fmt.layout(ctx.profile)
    quantization = None
    try:
        if export_error or exported is None:
            raise BuildError(export_error or f"{fmt.name} was not exported")
        if precision.name == BASE:
            # An export its own backend cannot load is a failed artifact, not a failed build.
            def validate() -> tuple[Verdict, Optional[Accuracy]]:
                with mapped(BuildError, f"the runtime cannot load or run {name}"):
                    validation, accuracy, _ = validate_artifact(fmt.name, precision.name, file, layout, ctx.profile,
                                                                ctx.host, ctx.references, ctx.floors)
                return validation, accuracy

            with ctx.timed(f"{fmt.name}.validate"):
                if ctx.shared is None:
                    validation, accuracy = validate()
                else:  # the same bytes checked the same way: an earlier target's figures (shared_work.py)
                    validation, accuracy = ctx.shared.result(
                        ("validate", fmt.name, fmt.export_key(ctx.profile), layout, ctx.profile.threads), validate)
                    # Whether this host runs the target's kernels labels the figures, not makes them.
                    matches = ctx.profile.matches_host(ctx.host, fmt.name, precision.name)
                    validation = dataclasses.replace(validation, host_matches_target=matches)
                    if accuracy is not None:
                        accuracy = dataclasses.replace(accuracy, indicative=not matches)
        else:
            with ctx.timed(f"{fmt.name}.quantize+search"):
                found = _search(ctx, fmt, precision, exported, file)
            validation, accuracy = found.validation, found.confirmation
            ctx.errors[name] = found.errors
            quantization = _quantization(ctx, fmt, precision, found)
    except BuildError as exc:
        return Artifact(name=name, format=fmt.name, precision=precision.name, status="failed", error=str(exc))
    files = tuple(FileRef(path=f.name, sha256=sha256_file(f), size_bytes=f.stat().st_size)
                  for f in artifact_files(fmt, file))
    return Artifact(
        name=name, format=fmt.name, precision=precision.name, status="ok",
        path=file.name, sha256=files[0].sha256, size_bytes=sum(f.size_bytes for f in files), files=files,
        quantization=quantization, layout=layout, validation=validation, accuracy=accuracy,
    )


def _quantization(ctx: BuildContext, fmt, precision: Precision, found: "_Found") -> Quantization:
    """What the manifest records of a quantized artifact: the chosen QuantResult (tool, recipe,
    the ops that stayed float), this target's ISA notes, the calibration and the search's trail."""
    samples = ctx.calibration_set
    return Quantization(
        tool=found.result.tool, recipe=dict(found.result.recipe), float_ops=tuple(found.result.float_ops),
        relies_on=ctx.profile.relies_on(fmt.name, precision.name),
        calibration=samples.source if precision.calibrated else None,
        calibration_samples=len(next(iter(samples.samples.values()))) if precision.calibrated else None,
        search=tuple(found.trail))


class _Found(NamedTuple):
    """A search's chosen artifact (left at its file), as the manifest and the bundle's rules need it."""

    result: QuantResult
    trail: list[dict]
    validation: Verdict
    confirmation: Optional[Accuracy]
    errors: np.ndarray  # per group, of the halves' choices on the other halves (closeness.py): out of sample


def _search(ctx: BuildContext, fmt, precision: Precision, exported: Exported, file: Path) -> _Found:
    """search.py's choice for `precision`, or in a multi-target build the one an earlier
    target made from the same inputs (shared_work.py)."""
    def run() -> _Found:
        chosen, trail = search(fmt, precision, exported, file, SearchContext(
            ctx.profile, ctx.host, ctx.references, ctx.calibration_set.samples, ctx.floors, ctx.request.budget.prefer))
        confirmed = chosen.confirmation
        assert confirmed is not None  # search() confirms what it chooses
        return _Found(chosen.result, trail, chosen.validation, confirmed.accuracy, confirmed.errors)

    if ctx.shared is None:
        return run()
    matches = ctx.profile.matches_host(ctx.host, fmt.name, precision.name)
    recipes = [dict(recipe) for recipe in fmt.recipes(ctx.profile, precision)]
    key = (fmt.name, precision.name, fmt.export_key(ctx.profile), json.dumps(recipes, sort_keys=True, default=str),
           matches, fmt.layout(ctx.profile),
           ctx.profile.threads if matches else None)  # where speed decides, it is timed at the target's threads
    return ctx.shared.reuse(key, fmt, file, run)


def _dynamic(fmt) -> list[Precision]:
    """The precisions of `fmt` whose activations are quantized at run time."""
    return [p for p in map(precision_named, fmt.precisions) if p.dynamic]


def _has_attention(fmt, precisions: list[Precision], fp32_file: Path) -> bool:
    """Whether the profile's precisions get dynamic int8 for this model: a calibrated integer
    precision (static int8) is among them, none of the format's dynamic ones is, and the
    exported model has attention."""
    return (any(p.integer and p.calibrated for p in precisions) and not any(p.dynamic for p in precisions)
            and bool(_dynamic(fmt)) and supports(fmt, ATTENTION) and fmt.has_attention(fp32_file))


def _time_artifacts(artifacts: list[Artifact], profile, host, refs: References, bundle_dir: Path,
                    shared: Optional[SharedWork] = None) -> tuple[list[Artifact], dict[str, dict]]:
    """Time the built artifacts whose kernels this host runs in one interleaved run (the
    runtime's default rests on these ratios, so they come from the same run; returned by
    name, rounds included), and record the integer input dtypes a converter changed. The
    others are not timed: a Pi's artifacts timed on an x86 build host say nothing of the
    Pi, and the runtime never reads such a figure. A quantized artifact that its format's
    fp32 clearly outpaces here is said so: it still ships (it is smaller, and the default
    never picks it), the user decides. In a multi-target build, a target whose artifacts
    are among an earlier target's, run at the same threads, takes that run: its rounds
    interleave every artifact, so any of them compare as in a run of their own."""
    built = [a for a in artifacts if a.status == "ok"]

    def measure() -> tuple[dict[str, dict], dict[str, Optional[dict]]]:
        sessions = [open_artifact(a.format, bundle_dir / a.path, a.layout, profile, refs) for a in built]
        here = [(a.name, s) for a, s in zip(built, sessions, strict=True) if a.validation.host_matches_target]
        timings = dict(zip((name for name, _ in here), compare_latency([s for _, s in here], refs, host),
                           strict=True)) if here else {}
        declared = {s.name: np.dtype(s.dtype) for s in refs.inputs}
        narrowed = {a.name: {n: str(d) for n, d in s.native_dtypes().items() if d.kind in "iu"
                             and declared[n].kind in "iu" and d != declared[n]} or None
                    for a, s in zip(built, sessions, strict=True)}
        return timings, narrowed

    if shared is None:
        timings, narrowed = measure()
    else:  # an earlier target's run of these files (and maybe more) at these threads
        timings, narrowed = shared.covering(("latency", profile.threads), frozenset(
            (a.name, a.sha256, a.layout, a.validation.host_matches_target) for a in built), measure)
        timings = {a.name: timings[a.name] for a in built if a.name in timings}
    timed = []
    for art in artifacts:
        if art.status != "ok":
            timed.append(art)
            continue
        latency, fp32 = timings.get(art.name), timings.get(f"{art.format}-fp32")
        if latency is not None and art.precision != BASE and fp32 and clearly_faster(fp32, latency):
            log.warning(f"{art.name} runs at {fp32['p50_ms'] / latency['p50_ms']:.2f}x the speed of {art.format}-fp32 "
                 f"on this host, which runs target {profile.id}'s kernels: it saves space, not time")
        fields = {k: v for k, v in (latency or {}).items() if k != "rounds_ms"}
        timed.append(dataclasses.replace(art, input_dtypes=narrowed[art.name],
                                         latency=Latency(**fields, matches_target=True) if latency else None))
    return timed, timings


def _own_outputs(artifacts: list[Artifact], profile, refs: References, bundle_dir: Path) -> dict[str, np.ndarray]:
    """Each built artifact's outputs on the golden inputs, here: the device's self-test holds
    the artifact to them too, far tighter than PyTorch's int8 bounds (parity.self_test)."""
    own = {}
    for art in artifacts:
        if art.status == "ok":
            session = open_artifact(art.format, bundle_dir / art.path, art.layout, profile, refs)
            for name, value in run_samples(session.run, refs.golden_inputs).items():
                own[f"{GOLDEN_ARTIFACT_PREFIX}{art.name}/{name}"] = value
    return own


def _emulate(manifest: Manifest, profile, bundle_dir: Path, seconds: dict, refs: References,
             budget: Budget) -> Manifest:
    """Run the staged bundle on the target's emulated ISA: golden self-test of every artifact,
    and accuracy of the integer ones on eval samples, which then replaces the build host's
    where it is still a confirmation (below)."""
    if not profile.emulation_cpu:
        log.warning(f"--verify-emulated: target {profile.id} names no emulation_cpu (qemu cannot emulate its "
             "kernels); its integer artifacts stay measured on this host only, marked indicative")
        return manifest
    # Only what this host does not run as the target will: on another architecture every
    # artifact, on the same one the integer artifacts whose kernel family differs.
    foreign = {a.name for a in manifest.artifacts if a.status == "ok" and not a.validation.host_matches_target}
    if not foreign:
        log.warning(f"--verify-emulated: this host runs target {profile.id}'s kernels itself; nothing to emulate")
        return manifest
    from .emulate import EVAL_SAMPLES, verify_emulated

    # Cross-fitted, the shipped artifact was calibrated on every judged sample: it has no
    # unseen ones to run there.
    ev = refs.evaluation
    crossfitted = ev is not None and ev.split is not None and ev.split.crossfit
    evaluation = _subset(ev, EVAL_SAMPLES) if ev is not None and not crossfitted else None
    with _timed(seconds, "emulated.verify"):
        report = verify_emulated(bundle_dir, profile.emulation_cpu, arch=profile.arch, evaluation=evaluation,
                                 only=foreign, budget=budget)
    # The emulated figure replaces the host's only where both halves of the eval samples chose
    # the shipped candidate (holdout.py): then those samples confirm that very artifact;
    # otherwise the pooled confirmation is of other candidates, and the host's stays.
    verdicts = map(Verdict.from_dict, report["results"])
    measured = {v.artifact: v.accuracy for v in verdicts
                if v.accuracy and _confirmed_by_both_halves(manifest.artifact(v.artifact))}
    artifacts = tuple(
        dataclasses.replace(a, accuracy=from_data(Accuracy, measured[a.name], "emulated accuracy"))
        if a.name in measured else a
        for a in manifest.artifacts
    )
    return dataclasses.replace(manifest, emulated=report, artifacts=artifacts)


def _confirmed_by_both_halves(art: Artifact) -> bool:
    chosen = next((t for t in (art.quantization.search if art.quantization else ()) if t.get("chosen")), None)
    return chosen is not None and set(chosen.get("chosen_by", ())) == set(HALVES)


def _subset(evaluation: Evaluation, count: int) -> Evaluation:
    """`count` samples spread evenly over the evaluation set (it is often ordered by source)."""
    return evaluation.subset(np.unique(np.linspace(0, evaluation.count - 1, min(count, evaluation.count)).astype(int)))


def _too_little_data(art: Artifact) -> Optional[str]:
    """What to say when an artifact clears its floor on the confirmation samples but its
    interval reaches below it: the data cannot promise the floor; how much more could."""
    acc = art.accuracy
    figure = headline(acc.metrics) if acc is not None and acc.split == CONFIRMATION else None
    if figure is None or figure.floor is None or figure.low >= figure.floor or figure.value <= figure.floor:
        return None
    units = figure.groups or figure.samples
    perfect = figure.value >= (100.0 if figure.name.endswith("_agreement") else 1.0)
    if perfect:  # the interval counted each group as one trial (intervals.ratio_interval): so does this
        scale = 100 if figure.name.endswith("_agreement") else 1
        needed = groups_to_promise(figure.value / scale, figure.floor / scale)
    else:  # an interval narrows with the root of the independent groups
        needed = math.ceil(units * ((figure.value - figure.low) / (figure.value - figure.floor)) ** 2)
    more = f"about {needed} groups (separate photos or sources) would" if needed else "more groups would"
    return (f"{art.name}: {figure.describe()} clears the floor on {acc.data} samples the choice did not see, but "
            f"{units} independent groups cannot promise it (the interval reaches {figure.low:.3g}); {more}")


def _misses(art: Artifact, manifest: Manifest) -> Optional[str]:
    """Why a built artifact must not ship as it is, or None."""
    v, acc = art.validation, art.accuracy
    if v is not None and not v.passed:
        return (f"{art.name} differs from PyTorch on the golden samples: max |diff| {v.max_abs_diff:.2e} "
                f"(allowed {v.tolerance:.1e}), cosine {v.cosine:.4f} (needs ≥ {v.min_cosine})")
    emulated = manifest.emulated or {}
    for r in map(Verdict.from_dict, emulated.get("results", [])):
        if r.artifact == art.name and not r.passed:
            own, floor = r.own_cosine, r.own_min_cosine
            diff, allowed = figure_text(r.max_abs_diff, ".3g"), figure_text(r.tolerance, ".3g")
            why = r.error or (f"cosine vs this host's own outputs {own:.5f} < {floor}"
                              if own is not None and floor is not None and own < floor
                              else f"max |diff| vs PyTorch {diff}, allowed {allowed}")
            return f"{art.name} fails its self-test on emulated {emulated['arch']} ({why})"
    if acc is not None and acc.within_budget is False:
        figures = (", ".join(m.describe() for m in acc.metrics) if acc.metrics
                   else f"cosine {acc.cosine:.5f} (needs ≥ {manifest.min_cosine})")
        if acc.drop is not None:
            figures += f", loses {acc.drop:.2f} top-1 points (allowed {manifest.accuracy_tolerance})"
        tried = len(art.quantization.search if art.quantization else ()) or 1
        where = f"measured on {acc.measured_on}" + (", indicative" if acc.indicative else "")
        part = f" {acc.split}" if acc.split else ""
        return (f"{art.name} misses the accuracy budget on {acc.samples} {acc.data}{part} samples: {figures} "
                f"({where}; closest of {tried} candidate(s)); try more --calibration samples, another "
                "precision, or a looser --min-cosine/--min-agreement/--min-f1/--accuracy-budget")
    return None


def _problems(manifest: Manifest, allow_mismatch: bool, required: set[str]) -> list[str]:
    """Why the build must not be written: an artifact of a `required` precision that failed
    or misses its checks (unless `allow_mismatch`), or nothing left to ship."""
    problems = []
    failed = [a.name for a in manifest.artifacts if a.status == "failed" and a.precision in required]
    if failed:
        problems.append(f"{', '.join(failed)} failed to build (reasons in the table); "
                        "pass --allow-partial to write the other artifacts")
    if not any(a.status == "ok" for a in manifest.artifacts):
        problems.append("no artifact is left to ship (reasons in the table)")
    if allow_mismatch:
        return problems
    misses = [m for a in manifest.artifacts if a.status == "ok" and a.precision in required
              and (m := _misses(a, manifest))]
    if misses:
        problems += misses + ["pass --allow-mismatch to write such artifacts anyway, "
                              "or --allow-partial to leave them out"]
    return problems


def _all(manifest: Manifest) -> set[str]:
    return {a.precision for a in manifest.artifacts}


def _dominated(manifest: Manifest, timings: dict[str, dict], errors: dict[str, np.ndarray]) -> dict[str, str]:
    """Quantized artifacts that another quantized artifact of the same format beats on both
    axes the user weighs, by name, with why: clearly closer to PyTorch on the same judged
    samples, out of sample (the halves' choices on the other halves, paired over groups,
    closeness.py), and not slower where this host runs the target's kernels. The noisier
    one loses more answers on the user's next images, which are often less certain than
    the ones that chose it (docs/quantization.md), and it buys no speed. Only within a
    format: a device with one backend installed still gets that format's int8."""
    fine = [a for a in manifest.artifacts if a.status == "ok" and a.name in errors and a.name in timings
            and a.validation.host_matches_target and _misses(a, manifest) is None]
    beaten = {}
    for art in fine:
        for rival in fine:
            if (rival is not art and rival.format == art.format
                    and clearly_closer(errors[rival.name], errors[art.name])
                    and not clearly_faster(timings[art.name], timings[rival.name])):
                beaten[art.name] = (
                    f"{rival.name} is clearly closer to PyTorch on the same samples (answer error "
                    f"{errors[rival.name].mean():.3f} vs {errors[art.name].mean():.3f}) and not slower on this host; "
                    f"ask for {art.precision} with --precisions to ship it anyway")
                break
    return beaten


def _leave_out(manifest: Manifest, bundle_dir: Path, keep=lambda art: False,
               dominated: Optional[dict[str, str]] = None) -> Manifest:
    """Artifacts that failed to build or to meet their checks, or that another artifact
    `dominated`, are left out of the bundle (their files removed) and stay in the manifest
    as `rejected` with why, except those `keep` names (the precisions the user asked for:
    they fail the build instead)."""
    kept = []
    for art in manifest.artifacts:
        if keep(art):
            kept.append(art)
            continue
        why = (_misses(art, manifest) or (dominated or {}).get(art.name)) if art.status == "ok" else None
        if why is None:  # fine, or failed to build (no file, already says why)
            kept.append(art)
            continue
        for file in art.all_files():
            (bundle_dir / file.path).unlink(missing_ok=True)
        log.warning(f"{art.name} left out: {why}")
        kept.append(dataclasses.replace(art, status="rejected", path=None, sha256=None, files=(), error=why))
    return dataclasses.replace(manifest, artifacts=tuple(kept))
