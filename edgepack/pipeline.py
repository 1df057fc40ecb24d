"""The build: load → export → quantize → validate → write. No format-specific code here."""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

import edgepack_runtime
from edgepack_runtime.drift import reference_stats
from edgepack_runtime.bundle import GOLDEN_INPUT_PREFIX, GOLDEN_OUTPUT_PREFIX, sha256_file
from edgepack_runtime.hostinfo import host_info
from edgepack_runtime.manifest import SCHEMA_VERSION, Artifact, Golden, Manifest

from . import __version__
from .bundle_writer import BundleStaging
from .errors import BuildError, TargetError
from .formats import get_format
from .model_source import load_model
from .samples import golden_inputs, load_samples, random_samples
from .targets import load_target
from .validate import References, torch_references, validate_artifact

__all__ = ["build", "BuildResult", "BuildFailed"]

GOLDEN_FILE = "golden.npz"
RANDOM_CALIBRATION_SAMPLES = 32
RANDOM_CALIBRATION_SEED = 7
# A float artifact that misses its tolerance is a broken export: it fails the build.
FLOAT_PRECISIONS = ("fp32", "fp16")
DEFAULT_MAX_ACCURACY_DROP = 1.0  # top-1 points an int8 artifact may lose vs PyTorch


@dataclass
class BuildResult:
    """What `build` made: the manifest (also when nothing was written) and why it failed."""

    manifest: Manifest
    path: Optional[Path]
    problems: list[str] = field(default_factory=list)


class BuildFailed(BuildError):
    """The build produced results but they fail its checks; `.result` holds them."""

    def __init__(self, message: str, result: BuildResult):
        super().__init__(message)
        self.result = result


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@contextmanager
def _timed(seconds: dict, stage: str):
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
    model: str,
    output: Path,
    target: str = "host",
    *,
    formats: Optional[Sequence[str]] = None,
    precisions: Optional[Sequence[str]] = None,
    weights: Optional[Path] = None,
    inputs: Sequence[str] = (),
    calibration: Optional[Path] = None,
    eval_data: Optional[Path] = None,
    name: Optional[str] = None,
    trust_checkpoint: bool = False,
    allow_mismatch: bool = False,
    allow_partial: bool = False,
    verify_emulated: bool = False,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    warn: Callable[[str], None] = _warn,
) -> BuildResult:
    """Build a bundle for `target` from `model` (FILE.py:FACTORY) into the directory `output`.

    Returns the BuildResult; raises BuildFailed (with the result) when an fp32 artifact
    misses its tolerance or an int8 artifact loses more than `max_accuracy_drop` top-1
    points on a matching host (unless `allow_mismatch`), or an artifact fails to build
    (unless `allow_partial`). Nothing is written at `output` when it raises.
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    profile = load_target(target)
    formats = _choose(formats, profile.formats, "format", profile.id)
    offered = {f: list(profile.settings(f).precisions) for f in formats}
    _choose(precisions, sorted({p for ps in offered.values() for p in ps}), "precision", profile.id)
    plan = {f: [p for p in ps if not precisions or p in precisions] for f, ps in offered.items()}
    host = host_info()
    staging = BundleStaging(Path(output))  # refuses a non-bundle destination before any work

    with _timed(seconds, "load"):
        loaded = load_model(model, weights=weights, inputs=inputs, trust_checkpoint=trust_checkpoint)
        calib, _ = load_samples(Path(calibration), loaded.inputs) if calibration else (None, None)
        evaluation = load_samples(Path(eval_data), loaded.inputs, labelled=True) if eval_data else None
    if calib is None and any("int8" in ps for ps in plan.values()):
        warn("no --calibration data: int8 artifacts are calibrated on RANDOM inputs and their accuracy "
             "is meaningless; pass --calibration calib.npz with real samples")
    with _timed(seconds, "reference"):
        refs = torch_references(loaded.module, loaded.inputs, *golden_inputs(loaded.inputs, calib), evaluation)
    calibration_used = _Calibration(
        samples=calib or random_samples(loaded.inputs, RANDOM_CALIBRATION_SAMPLES, RANDOM_CALIBRATION_SEED),
        source="data" if calib is not None else "random",
    )

    artifacts: list[Artifact] = []
    macs = None
    toolchain = {"edgepack": __version__, "edgepack-runtime": edgepack_runtime.__version__,
                 "python": platform.python_version()}
    with staging:
        for fmt_name, fmt_precisions in plan.items():
            fmt = get_format(fmt_name)
            toolchain.update(fmt.toolchain())
            built, counted = _build_format(fmt, fmt_precisions, loaded.module, refs, profile, host, staging.dir,
                                           calibration_used, seconds)
            artifacts += built
            macs = macs or counted

        golden_path = staging.dir / GOLDEN_FILE
        np.savez(golden_path,
                 **{GOLDEN_INPUT_PREFIX + k: v for k, v in refs.golden_inputs.items()},
                 **{GOLDEN_OUTPUT_PREFIX + k: v for k, v in refs.golden_outputs.items()})
        seconds["total"] = round(time.perf_counter() - start, 3)
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            name=name or staging.dest.name,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            target=profile.to_dict(),
            inputs=loaded.inputs,
            outputs=refs.outputs,
            artifacts=tuple(artifacts),
            golden=Golden(path=GOLDEN_FILE, sha256=sha256_file(golden_path),
                          samples=len(next(iter(refs.golden_inputs.values()))), real_samples=refs.real_samples),
            toolchain=toolchain,
            accuracy_tolerance=max_accuracy_drop,
            build={"model": model, "host": host.to_dict(), "seconds": seconds},
            macs=macs,
            drift_reference={k: reference_stats(v) for k, v in calib.items()} if calib is not None else None,
        )
        (staging.dir / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
        if verify_emulated:
            manifest = _emulate(manifest, profile, staging.dir, warn, seconds)
            (staging.dir / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
        result = BuildResult(manifest=manifest, path=None, problems=_problems(manifest, allow_mismatch, allow_partial))
        if result.problems:
            raise BuildFailed("; ".join(result.problems) + "; nothing was written", result)
        result.path = staging.commit()
    return result


class _Calibration(NamedTuple):
    samples: dict[str, np.ndarray]  # [N, *shape] per input
    source: str  # "data" (--calibration) or "random"


def _build_format(fmt, precisions: list[str], module, refs: References, profile, host, out_dir: Path,
                  calibration: _Calibration, seconds: dict) -> tuple[list[Artifact], Optional[int]]:
    """Export one format to fp32, derive its other precisions from that file, validate each.
    Returns the artifacts and the MACs per inference if this format counts them."""
    fp32_file = out_dir / f"model.fp32{fmt.suffix}"
    layout = fmt.layout(profile)
    export_error = None
    try:
        with _timed(seconds, f"{fmt.name}.export"):
            fmt.export(module, refs.inputs, [s.name for s in refs.outputs], profile, fp32_file)
    except BuildError as exc:
        export_error = str(exc)
    macs = None if export_error else fmt.count_macs(fp32_file)
    artifacts = []
    for precision in precisions:
        name = f"{fmt.name}-{precision}"
        file = out_dir / f"model.{precision}{fmt.suffix}"
        quantization = None
        try:
            if export_error:
                raise BuildError(export_error)
            if precision != "fp32":
                with _timed(seconds, f"{fmt.name}.quantize"):
                    quantization = fmt.quantize(fp32_file, file, profile, precision, calibration.samples)
                if precision == "int8":
                    quantization["calibration"] = calibration.source
                    quantization["calibration_samples"] = len(next(iter(calibration.samples.values())))
        except BuildError as exc:
            artifacts.append(Artifact(name=name, format=fmt.name, precision=precision, status="failed", error=str(exc)))
            continue
        with _timed(seconds, f"{fmt.name}.validate"):
            validation, accuracy = validate_artifact(fmt.name, precision, file, layout, profile, host, refs)
        artifacts.append(Artifact(
            name=name, format=fmt.name, precision=precision, status="ok",
            path=file.name, sha256=sha256_file(file), size_bytes=file.stat().st_size,
            quantization=quantization, layout=layout, validation=validation, accuracy=accuracy,
        ))
    if "fp32" not in precisions and fp32_file.exists():
        fp32_file.unlink()  # only the base for the other precisions: not part of the bundle
    return artifacts, macs


def _emulate(manifest: Manifest, profile, bundle_dir: Path, warn, seconds: dict) -> Manifest:
    """Run the staged bundle's self-test on emulated aarch64 and record it in the manifest."""
    if profile.arch != "aarch64":
        warn(f"--verify-emulated: target {profile.id} is {profile.arch}, not aarch64; nothing to emulate")
        return manifest
    from .emulate import verify_emulated

    with _timed(seconds, "emulated.verify"):
        report = verify_emulated(bundle_dir, profile.emulation_cpu)
    return dataclasses.replace(manifest, emulated=report)


def _problems(manifest: Manifest, allow_mismatch: bool, allow_partial: bool) -> list[str]:
    problems = []
    failed = [a.name for a in manifest.artifacts if a.status != "ok"]
    if failed and not allow_partial:
        problems.append(f"{', '.join(failed)} failed to build (reasons in the table); "
                        "pass --allow-partial to write the other artifacts")
    if allow_mismatch:
        return problems
    for r in (manifest.emulated or {}).get("results", []):
        if not r["passed"]:
            why = r["error"] or f"max |diff| vs PyTorch {r['max_abs_diff']:.3g} > {r['tolerance']:.3g}"
            problems.append(f"{r['artifact']} fails on emulated aarch64 ({why}); pass --allow-mismatch to write it anyway")
    for art in manifest.artifacts:
        if art.status != "ok":
            continue
        if art.precision in FLOAT_PRECISIONS and not art.validation.passed:
            problems.append(
                f"{art.name} differs from PyTorch by {art.validation.max_abs_diff:.2e} "
                f"(tolerance {art.validation.tolerance:.1e}); pass --allow-mismatch to write it anyway"
            )
        acc = art.accuracy
        if acc is not None and not acc.indicative and acc.drop > manifest.accuracy_tolerance:
            problems.append(
                f"{art.name} loses {acc.drop:.2f} top-1 points vs PyTorch (allowed "
                f"{manifest.accuracy_tolerance}); pass --allow-mismatch to write it anyway"
            )
    return problems
