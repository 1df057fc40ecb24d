"""Compare a model's outputs with reference outputs, and measure top-1 accuracy.

The packager validates artifacts with these functions at build time and
`edgepack-runtime verify` repeats the same check on the device: what was validated
is what ships. Every verdict scales with the outputs (cosine similarity, error
relative to the reference's range): an absolute tolerance alone passes anything
on a model whose outputs are near zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional

import numpy as np

from .errors import OutputShapeError
from .hostinfo import host_info, int8_kernel_family
from .precision import is_calibrated, is_integer
from .tasks import task
from .verdict import FAILED, PASSED, Verdict

if TYPE_CHECKING:
    from .model import Model

__all__ = ["Fidelity", "fidelity", "split_samples", "run_samples", "max_abs_diff", "top1_accuracy",
           "self_test", "parity_samples", "parity_passes", "SAME_KERNELS", "OTHER_KERNELS"]

RunFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def split_samples(inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Stacked samples ([N, *input_shape] per input) → N feeds of one sample each."""
    count = len(next(iter(inputs.values())))
    return [{k: v[i] for k, v in inputs.items()} for i in range(count)]


def run_samples(run: RunFn, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed stacked samples one at a time; stack the outputs."""
    collected: dict[str, list[np.ndarray]] = {}
    for feed in split_samples(inputs):
        for name, value in run(feed).items():
            collected.setdefault(name, []).append(np.asarray(value))
    for name, values in collected.items():
        odd = next((i for i, v in enumerate(values) if v.shape != values[0].shape), None)
        if odd is not None:
            raise OutputShapeError(
                f"output {name!r} changes shape with the input data ({list(values[0].shape)} for sample 1, "
                f"{list(values[odd].shape)} for sample {odd + 1}): a data-dependent shape (nonzero, a boolean mask, "
                "NMS) has no fixed size to export; "
                "return a fixed-size tensor from forward() (pad it, or keep the top k)")
    return {name: np.stack(values) for name, values in collected.items()}


def max_abs_diff(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """Largest absolute difference over every output element (NaN if any is NaN)."""
    return float(np.max([_max_abs(outputs[name], ref) for name, ref in reference.items()]))


def _max_abs(out: np.ndarray, ref: np.ndarray) -> float:
    if out.ndim == 0 or out.shape[:1] != ref.shape[:1] or not len(out):  # no samples to walk
        return float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64))))
    # A sample at a time: float64 copies of a whole evaluation set's outputs are GBs for a
    # detector (26 samples of [151, 8400] took 1.5 GB of temporaries, a quarter of a build).
    return float(np.max([np.max(np.abs(o.astype(np.float64) - r.astype(np.float64))) for o, r in zip(out, ref)]))


def _sample(outputs: Mapping[str, np.ndarray], names: Iterable[str], i: int) -> np.ndarray:
    """All outputs of sample `i` flattened into one float64 row."""
    return np.concatenate([outputs[n][i].ravel() for n in names], dtype=np.float64)


@dataclass(frozen=True)
class Fidelity:
    """How closely outputs follow a reference, in terms that scale with the outputs."""

    cosine: float  # mean over samples of the cosine similarity of all outputs (1.0 = same direction)
    sqnr_db: float  # signal-to-quantization-noise ratio over all samples, dB (higher is better)
    max_rel_error: float  # max |out − ref| / (max ref − min ref)
    top1_agreement: Optional[float]  # % of samples whose arg-max of the first output matches; None if 1 value
    samples: int
    cosine_min: float = 1.0  # the worst sample's cosine similarity


def fidelity(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> Fidelity:
    """Compare stacked outputs ([N, ...] per name) with the reference's, a sample at a time
    (in float64, as a whole: each sample's outputs are one row)."""
    names = list(reference)
    count = len(reference[names[0]])
    dots, norms_out, norms_ref = np.empty(count), np.empty(count), np.empty(count)
    signal, noise_power, worst = np.empty(count), np.empty(count), np.empty(count)
    highs, lows = np.empty(count), np.empty(count)
    size = sum(int(np.prod(reference[n].shape[1:])) for n in names)  # output elements per sample
    for i in range(count):
        out, ref = _sample(outputs, names, i), _sample(reference, names, i)
        noise = out - ref
        dots[i], norms_out[i], norms_ref[i] = out @ ref, np.sqrt(out @ out), np.sqrt(ref @ ref)
        signal[i], noise_power[i] = ref @ ref, noise @ noise
        worst[i] = np.max(np.abs(noise)) if size else 0.0
        highs[i], lows[i] = (ref.max(), ref.min()) if size else (0.0, 0.0)
    norms = norms_out * norms_ref
    both_zero = (norms_out == 0) & (norms_ref == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosines = np.where(norms > 0, dots / norms, np.where(both_zero, 1.0, 0.0))
    total_signal, total_noise = float(np.sum(signal)), float(np.sum(noise_power))
    sqnr = (float("inf") if total_noise == 0 else
            (-float("inf") if total_signal == 0 else 10 * np.log10(total_signal / total_noise)))
    span = float(np.max(highs) - np.min(lows)) if count and size else 0.0
    largest = float(np.max(worst)) if count else 0.0
    max_rel = largest / span if span > 0 else (0.0 if largest == 0 else float("inf"))
    first = reference[names[0]]
    agreement = None
    if first[0].size > 1:
        agreement = float(np.mean(outputs[names[0]].reshape(count, -1).argmax(1) == first.reshape(count, -1).argmax(1))
                          * 100)
    return Fidelity(cosine=float(np.clip(np.mean(cosines), -1.0, 1.0)), sqnr_db=sqnr, max_rel_error=max_rel,
                    top1_agreement=agreement, samples=count,
                    cosine_min=float(np.clip(np.min(cosines), -1.0, 1.0)) if count else 1.0)


def parity_passes(max_abs: float, tolerance: float, cosine: float, min_cosine: Optional[float]) -> bool:
    """The verdict shared by the build and the on-device self-test: the error within
    `tolerance` (a floor plus a fraction of the reference's range, fixed at build time)
    and the direction of the outputs kept (bundles from before min_cosine: range only)."""
    return max_abs <= tolerance and (min_cosine is None or cosine >= min_cosine)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Percent of samples whose arg-max over the last axis equals the label."""
    predicted = logits.reshape(len(labels), -1).argmax(axis=1)
    return float(np.mean(predicted == labels) * 100.0)


def parity_samples(precision: str, inputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                   real_samples: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The golden samples an artifact of `precision` is compared on (see manifest.Golden)."""
    if is_calibrated(precision) and real_samples > 0:
        return ({k: v[:real_samples] for k, v in inputs.items()},
                {k: v[:real_samples] for k, v in reference.items()})
    return dict(inputs), dict(reference)


@dataclass(frozen=True)
class OwnTolerance:
    """How far an artifact's outputs on a device may stray from its own on the build host."""

    min_cosine: float
    range_fraction: float  # of the build host's output range, for the largest difference


# The same kernels compute the same numbers up to summation order (threads); an int8 output
# may move by a quantization step (1/255 of its range) at most a few times.
SAME_KERNELS = OwnTolerance(min_cosine=0.9999, range_fraction=1 / 64)
# Other kernels (x86 vs ARM, AVX2 vs VNNI) round and saturate int8 their own way: the same
# MobileNetV2 int8 artifact's logits differed in the third digit between x86 and aarch64,
# and AVX2's saturating u8 x s8 products move them further (an emulated Haswell's outputs
# failed a 0.999 cosine against a VNNI host's). Still far inside PyTorch's int8 bounds (0.95).
OTHER_KERNELS = OwnTolerance(min_cosine=0.99, range_fraction=0.1)


def _same_kernels(model: Model) -> bool:
    """Whether this device runs the artifact's kernels as the build host did."""
    built = (model.artifact.validation.host if model.artifact.validation else None) or {}
    here = host_info()
    if built.get("arch") != here.arch:
        return False
    if not is_integer(model.artifact.precision):
        return True
    return int8_kernel_family(here.arch, here.isa) == int8_kernel_family(here.arch, tuple(built.get("isa", ())))


def self_test(model: Model, same_kernels: Optional[bool] = None) -> Verdict:
    """Run the bundle's golden inputs through `model` and compare with PyTorch's outputs
    using the limits recorded for this artifact at build time, and with the artifact's own
    outputs on the build host (SAME_KERNELS or OTHER_KERNELS). `same_kernels`: whether this
    machine runs the build host's kernels, when the caller knows better than /proc/cpuinfo
    (under qemu-user it shows the real CPU, not the emulated one)."""
    golden_inputs, golden_outputs = model.bundle.golden()
    inputs, reference = parity_samples(model.artifact.precision, golden_inputs, golden_outputs,
                                       model.bundle.manifest.golden.real_samples)
    manifest = model.bundle.manifest
    post = manifest.postprocessing
    judged = task(manifest.task or "generic")
    raw = run_samples(model.run, inputs)
    outputs = judged.comparable(raw, reference, post)
    diff, measured = max_abs_diff(outputs, reference), fidelity(outputs, reference)
    built = model.artifact.validation
    tolerance = built.tolerance if built is not None and built.tolerance is not None else 0.0
    min_cosine = built.min_cosine if built is not None else None
    passed = parity_passes(diff, tolerance, measured.cosine, min_cosine)
    own = model.bundle.own_outputs(model.artifact.name)
    own_figures: dict[str, Any] = {}
    if own is not None:
        count = len(next(iter(reference.values())))
        own = {k: v[:count] for k, v in own.items()}  # the samples `inputs` holds (parity_samples keeps the first)
        same = _same_kernels(model) if same_kernels is None else same_kernels
        limits = SAME_KERNELS if same else OTHER_KERNELS
        span = max(float(np.max(v) - np.min(v)) for v in own.values())
        own_tolerance = limits.range_fraction * span + 1e-6
        mine = judged.comparable(raw, own, post)
        own_diff, own_cosine = max_abs_diff(mine, own), fidelity(mine, own).cosine
        passed = passed and parity_passes(own_diff, own_tolerance, own_cosine, limits.min_cosine)
        own_figures = dict(own_cosine=own_cosine, own_max_abs_diff=own_diff, own_tolerance=own_tolerance,
                           own_min_cosine=limits.min_cosine, same_kernels=same)
    return Verdict(
        artifact=model.artifact.name,
        result=PASSED if passed else FAILED,
        cosine=measured.cosine,
        min_cosine=min_cosine,
        max_abs_diff=diff,
        tolerance=tolerance,
        samples=measured.samples,
        sqnr_db=measured.sqnr_db,
        backend=model.backend,
        **own_figures,
    )
