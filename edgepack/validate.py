"""Check artifacts against PyTorch through the runtime's own backends.

Parity (golden inputs, also repeated on the device by `verify`): the largest error must
stay within a floor plus a fraction of the PyTorch outputs' range, and the outputs'
cosine similarity to PyTorch's must reach a minimum per precision. Accuracy (eval data,
or the calibration samples cross-fitted): cosine, SQNR, top-1 agreement with
PyTorch and, with labels, top-1 accuracy, judged against the build's accuracy budget.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from edgepack_runtime.backends import Session, open_session
from edgepack_runtime.dims import resize, size_label
from edgepack_runtime.errors import first_line
from edgepack_runtime.hostinfo import HostInfo
from edgepack_runtime.manifest import Accuracy, Dim, TensorSpec
from edgepack_runtime.parity import (
    fidelity,
    max_abs_diff,
    parity_passes,
    parity_samples,
    run_samples,
    split_samples,
    top1_accuracy,
)
from edgepack_runtime.precision import precision as precision_of
from edgepack_runtime.stats import latency_summary, time_calls
from edgepack_runtime.verdict import FAILED, PASSED, Verdict

from .budget import Budget, measure
from .errors import BuildError, ModelSourceError
from .holdout import Split, deal_folds
from .targets import TargetProfile

__all__ = ["Evaluation", "References", "torch_references", "tolerance_for", "validate_artifact", "check_parity",
           "measure_on", "build_host", "compare_latency", "clearly_faster", "open_artifact"]


LATENCY_TRIAL_S = 0.6  # per artifact at build time: enough to rank, not to publish (bench does that)
LATENCY_ROUNDS = 8  # interleaved rounds of that time: a speed-up must show in (nearly) every one
SPEED_TIE = 0.10  # a smaller difference in median is no speed-up


def torch_outputs(module: torch.nn.Module, specs: Sequence[TensorSpec],
                  samples: dict[str, np.ndarray]) -> tuple[tuple[TensorSpec, ...], dict[str, np.ndarray]]:
    """PyTorch's outputs on `samples`, one sample at a time, with the output specs.

    Outputs are named `output` (one tensor) or `output_0`, `output_1`, … (a tuple).
    """
    def run(feed):
        try:
            with torch.no_grad():
                result = module(*(torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in specs))
        except (Exception, SystemExit) as exc:
            raise ModelSourceError(f"the model's forward() raised {type(exc).__name__}: {str(exc)[:300]}; "
                                   "fix the model or the input shapes (--input, example_inputs())"
                                   + _unnamed_dims_hint(specs)) from exc
        if isinstance(result, torch.Tensor):
            return {"output": result.numpy()}
        if isinstance(result, (tuple, list)) and all(isinstance(r, torch.Tensor) for r in result):
            return {f"output_{i}": r.numpy() for i, r in enumerate(result)}
        raise ModelSourceError(
            f"the model returned {type(result).__name__}; "
            "edgepack exports models that return a tensor or a tuple of tensors"
        )

    outputs = run_samples(run, samples)
    specs_out = tuple(TensorSpec(name=n, shape=tuple(v.shape[1:]), dtype=str(v.dtype)) for n, v in outputs.items())
    return specs_out, outputs


def _unnamed_dims_hint(specs: Sequence[TensorSpec]) -> str:
    """Unnamed ranges on several inputs are independent dims, checked at different sizes:
    the likely cause when inputs that share a length (token ids and their mask) clash."""
    unnamed = [(s, d) for s in specs for d in s.dynamic if "." in d.name]  # parse_input_specs names them INPUT.AXIS
    if len(unnamed) < 2:
        return ""
    (first, dim), (second, _) = unnamed[:2]
    return (f"; {first.name} and {second.name} have unnamed ranges, which are independent and were run at "
            f"different sizes: if they share a length, name it once, e.g. --input {first.name}:..x"
            f"seq={dim.min}..{dim.max}:{first.dtype} --input {second.name}:..xseq:{second.dtype}")


@dataclass(frozen=True)
class Sweep:
    """Golden samples resized along the dynamic dims, with PyTorch's outputs: parity at
    sizes other than the one the model was exported at (the edges of each range and one
    size no fixed-size artifact is built for, so padding is checked too)."""

    sizes: dict[str, int]
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    def describe(self) -> str:
        return size_label(self.sizes)


SWEEP_SAMPLES = 2  # golden samples per size of the sweep


def _sweep_sizes(specs: Sequence[TensorSpec]) -> list[dict[str, int]]:
    """One dim at a time, the others at their built size: its min, its max, and an odd size
    in between (never one of the power-of-two sizes TFLite artifacts are built for)."""
    built = {d.name: (spec.shape[d.axis], d.min, d.max) for spec in specs for d in spec.dynamic}
    sweeps = []
    for name, (size, low, high) in built.items():
        between = (low + high) // 2 | 1
        for value in sorted({low, between, high} - {size}):
            if low <= value <= high:
                sweeps.append({name: value})
    return sweeps


def _output_dims(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], sweeps: Sequence[Sweep]
                 ) -> tuple[TensorSpec, ...]:
    """Output specs with the dynamic dims that carry through: an axis whose size follows a
    dim's size (the batch, the tokens of per-token outputs). Pooled outputs stay static."""
    ranges = {d.name: d for spec in inputs for d in spec.dynamic}
    found = []
    for spec in outputs:
        dims: dict[int, str] = {}
        for sweep in sweeps:
            (name, value), = sweep.sizes.items()
            for axis, (before, after) in enumerate(zip(spec.shape, sweep.outputs[spec.name].shape[1:], strict=True)):
                if after == value and before != after:
                    dims.setdefault(axis, name)
        found.append(dataclasses.replace(spec, dynamic=tuple(
            Dim(name=name, axis=axis, min=ranges[name].min, max=ranges[name].max)
            for axis, name in sorted(dims.items()))))
    return tuple(found)


@dataclass(frozen=True)
class Evaluation:
    """Samples an artifact's accuracy is measured on, with PyTorch's outputs for them."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    labels: Optional[np.ndarray]
    source: str  # "eval", "cross-fitted calibration" or "random"
    reference_top1: Optional[float]
    groups: Optional[np.ndarray] = None  # one id per sample: the independent units of every interval
    split: Optional[Split] = None  # how the search chooses on some samples and confirms on the others

    @property
    def count(self) -> int:
        return len(next(iter(self.inputs.values())))

    def subset(self, indices: np.ndarray) -> "Evaluation":
        """The samples at `indices` (no split of their own)."""
        labels = self.labels[indices] if self.labels is not None else None
        outputs = {k: v[indices] for k, v in self.outputs.items()}
        return Evaluation(
            inputs={k: v[indices] for k, v in self.inputs.items()}, outputs=outputs, labels=labels,
            source=self.source, groups=self.groups[indices] if self.groups is not None else None,
            reference_top1=top1_accuracy(next(iter(outputs.values())), labels) if labels is not None else None)


@dataclass(frozen=True)
class References:
    """What every artifact is checked against: PyTorch's outputs on the golden inputs
    (the first `real_samples` from calibration data) and on the evaluation samples."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    golden_inputs: dict[str, np.ndarray]
    golden_outputs: dict[str, np.ndarray]
    real_samples: int
    evaluation: Optional[Evaluation] = None
    sweeps: tuple[Sweep, ...] = ()  # inputs with dynamic dims: parity at other sizes


def torch_references(module: torch.nn.Module, specs: tuple[TensorSpec, ...], golden: dict[str, np.ndarray],
                     real_samples: int, evaluation: Optional[tuple[dict, Optional[np.ndarray], str]] = None,
                     groups: Optional[np.ndarray] = None, crossfit: bool = False) -> References:
    """`evaluation`: (inputs, labels or None, source) of the samples accuracy is measured on,
    `groups` their group ids (None: each its own), `crossfit` when they are the calibration
    samples (holdout.py)."""
    output_specs, golden_outputs = torch_outputs(module, specs, golden)
    first = {k: v[:SWEEP_SAMPLES] for k, v in golden.items()}
    sweeps = []
    for sizes in _sweep_sizes(specs):
        inputs = resize(specs, first, sizes, stacked=True)
        sweeps.append(Sweep(sizes, inputs, torch_outputs(module, specs, inputs)[1]))
    output_specs = _output_dims(specs, output_specs, sweeps)
    measured = None
    if evaluation is not None:
        inputs, labels, source = evaluation
        _, eval_outputs = torch_outputs(module, specs, inputs)
        top1 = top1_accuracy(next(iter(eval_outputs.values())), labels) if labels is not None else None
        count = len(next(iter(inputs.values())))
        measured = Evaluation(inputs, eval_outputs, labels, source, top1, groups,
                              deal_folds(groups, count, crossfit))
    return References(specs, output_specs, golden, golden_outputs, real_samples, measured, tuple(sweeps))


def tolerance_for(precision: str, reference: dict[str, np.ndarray]) -> float:
    rule = precision_of(precision).tolerance
    span = max(float(np.max(v) - np.min(v)) for v in reference.values())
    return rule.floor + rule.range_fraction * span


def open_artifact(fmt: str, path, layout: Optional[str], target: TargetProfile, refs: References) -> Session:
    """A runtime session for an artifact with the target's threads (capped at this host's cores)."""
    threads = max(1, min(target.threads, os.cpu_count() or 1))
    return open_session(fmt, path, threads, refs.inputs, refs.outputs, layout)


def measure_on(outputs: dict[str, np.ndarray], ev: Evaluation, budget: Budget, measured_on: str,
               indicative: bool, split: Optional[str] = None) -> Accuracy:
    """Fidelity to PyTorch of `outputs` on the samples of `ev` (`split`: which part of the
    judged samples they are, holdout.py)."""
    return measure(outputs, ev.outputs, budget, labels=ev.labels, reference_top1=ev.reference_top1, data=ev.source,
                   measured_on=measured_on, indicative=indicative, groups=ev.groups, split=split)


def measure_accuracy(session: Session, refs: References, budget: Budget, measured_on: str,
                     indicative: bool) -> Optional[Accuracy]:
    """Fidelity to PyTorch on all the evaluation samples (None when there are none): an
    artifact that was not chosen on them (the float ones)."""
    ev = refs.evaluation
    if ev is None:
        return None
    return measure_on(run_samples(session.run, ev.inputs), ev, budget, measured_on, indicative)


def compare_latency(sessions: Sequence[Session], refs: References, host: HostInfo) -> list[dict]:
    """p50 of each session on the golden inputs, timed in interleaved rounds so that the
    machine's swings (2x on a shared host) hit every session alike: ranks artifacts and
    recipes, not a benchmark. Each result keeps its per-round p50s (`rounds_ms`)."""
    feeds = split_samples(refs.golden_inputs)
    rounds: list[list[float]] = [[] for _ in sessions]
    for round_number in range(LATENCY_ROUNDS):
        for timings, session in zip(rounds, sessions, strict=True):
            warmup = 3 if round_number == 0 else 1  # caches are warm after the first round
            timings.append(latency_summary(time_calls(session.run, feeds, LATENCY_TRIAL_S / LATENCY_ROUNDS,
                                                      warmup=warmup))["p50"])
    return [{"p50_ms": round(float(np.median(r)), 4), "threads": s.threads, "host": f"{host.arch}, {host.cpu}",
             "rounds_ms": [round(t, 4) for t in r]} for s, r in zip(sessions, rounds, strict=True)]


def clearly_faster(a: dict, b: dict) -> bool:
    """Whether latency `a` beats `b` (both from one compare_latency) beyond its noise: a
    median lower by more than SPEED_TIE, won in all but at most one round. Recipes that
    differ only in their ranges build the same graph; a lucky trial must not rank them."""
    wins = sum(x < y for x, y in zip(a["rounds_ms"], b["rounds_ms"], strict=True))
    return a["p50_ms"] * (1 + SPEED_TIE) < b["p50_ms"] and wins >= len(a["rounds_ms"]) - 1


def validate_artifact(fmt: str, precision: str, path, layout: Optional[str], target: TargetProfile,
                      host: HostInfo, refs: References, budget: Budget
                      ) -> tuple[Verdict, Optional[Accuracy], Session]:
    """Run one artifact on the golden inputs and all the evaluation samples with the runtime
    backend. Returns the parity verdict, the accuracy and the open session."""
    validation, session = check_parity(fmt, precision, path, layout, target, host, refs, budget)
    accuracy = measure_accuracy(session, refs, budget, build_host(host), indicative=not validation.host_matches_target)
    return validation, accuracy, session


def build_host(host: HostInfo) -> str:
    """Where a figure measured here was measured (Accuracy.measured_on)."""
    return f"{host.arch} (build host)"


def check_parity(fmt: str, precision: str, path, layout: Optional[str], target: TargetProfile, host: HostInfo,
                 refs: References, budget: Budget) -> tuple[Verdict, Session]:
    """Run one artifact on the golden inputs (and the sweeps of its dynamic dims) with the
    runtime backend. Returns the parity verdict and the open session."""
    session = open_artifact(fmt, path, layout, target, refs)
    golden_inputs, reference = parity_samples(precision, refs.golden_inputs, refs.golden_outputs, refs.real_samples)
    outputs = budget.judged_as.comparable(run_samples(session.run, golden_inputs), reference, budget.answer)
    diff, measured = max_abs_diff(outputs, reference), fidelity(outputs, reference)
    tolerance, min_cosine = tolerance_for(precision, reference), precision_of(precision).tolerance.min_cosine
    cosine = measured.cosine
    for sweep in refs.sweeps:  # the same bounds at the other sizes of the dynamic dims
        try:
            swept = run_samples(session.run, sweep.inputs)
        except Exception as exc:  # the backend's own errors too: a graph fixed to one size
            raise BuildError(f"{fmt}-{precision} does not run at {sweep.describe()} ({first_line(exc)}); "
                             "check that the model has no size-dependent branches, or narrow the --input range"
                             ) from exc
        swept = budget.judged_as.comparable(swept, sweep.outputs, budget.answer)
        diff = max(diff, max_abs_diff(swept, sweep.outputs))
        cosine = min(cosine, fidelity(swept, sweep.outputs).cosine)
    matches = target.matches_host(host, fmt, precision)
    validation = Verdict(
        artifact=f"{fmt}-{precision}",
        result=PASSED if parity_passes(diff, tolerance, cosine, min_cosine) else FAILED,
        max_abs_diff=diff,
        tolerance=tolerance,
        samples=measured.samples,
        backend=f"{session.backend} {session.backend_version}",
        host={"arch": host.arch, "cpu": host.cpu, "isa": list(host.isa)},
        host_matches_target=matches,
        cosine=cosine,
        min_cosine=min_cosine,
        sqnr_db=measured.sqnr_db,
        sizes=tuple(sweep.describe() for sweep in refs.sweeps),
    )
    return validation, session
