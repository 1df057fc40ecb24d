"""Accuracy-driven quantization: try the target's recipes, then float islands where they are
needed, and report figures from samples the choice did not see (holdout.py).

No recipe wins on every model (docs/quantization.md), so every recipe the target profile
lists is quantized and run on the judged samples. Candidates are ranked by a continuous
error of what the user sees (closeness.py), not only by a count near the floor. When no
candidate clears its floors with margin (the low end of its interval), the search explores
float islands (islands.py): the most sensitive layers of the most faithful recipe, a few
more at each step (the walk stops at a step that holds with margin, or when a step lowers
the error no further), then the first layers: the largest share first, then the smallest
share within budget by bisection. What stays float is decided here alone, as op ids of the
exported graph (`QuantPlan.float_ops`): a format that returns its graph in its `Exported`
gets the detector's tail and the prefix without a line about them. Then the choice
rule (`_choose`), by `--prefer`:

- `balanced` (default): the fastest candidate whose error is within one standard error
  (paired over the groups) of the most faithful candidate's; with fewer than
  MIN_GROUPS_TO_TRADE groups that error says too little to trade fidelity for speed, and
  only a candidate no worse in any group may stand in for the most faithful;
- `accuracy`: the most faithful; `speed`: the fastest that clears the floors.

The rule runs three times: on all the judged samples (the artifact that ships) and on each
half of them; each half's choice is confirmed on the other half, and the pooled
confirmation is the artifact's accuracy, which decides whether it ships. Every candidate is
recorded in the artifact's `quantization.search` trail with its figures on all the judged
samples (`selection`: they chose it), its error, its speed if timed and its seconds.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgepack_runtime.backends import Session
from edgepack_runtime.hostinfo import HostInfo
from edgepack_runtime.manifest import Accuracy
from edgepack_runtime.parity import run_samples
from edgepack_runtime.precision import Precision
from edgepack_runtime.task_fidelity import headline
from edgepack_runtime.verdict import Verdict

from .budget import Budget
from .closeness import MIN_GROUPS_TO_TRADE, group_errors
from .errors import BuildError, mapped
from .formats import MIXED_PRECISION, Exported, QuantPlan, QuantResult, Recipe, move_artifact, remove_artifact, supports
from .formats.errors import root_cause
from .holdout import ALL, CONFIRMATION, HALVES, Split
from .islands import Islands
from .targets import TargetProfile
from .validate import (
    Evaluation,
    References,
    build_host,
    check_parity,
    clearly_faster,
    compare_latency,
    measure_on,
    open_artifact,
)

__all__ = ["Candidate", "SearchContext", "search"]

# Each candidate as it is measured (INFO): the CLI's status line shows it, -v prints it.
log = logging.getLogger(__name__)

# Layers kept in float at each mixed-precision step (the most sensitive first), never more
# than MAX_FLOAT_SHARE of the ranked layers: float islands cost the speed int8 is for, and a
# mixed candidate that is not faster than the float model is no candidate at all.
MIXED_PRECISION_STEPS = (1, 2, 4, 8, 16)
MAX_FLOAT_SHARE = 0.25
# Then the first layers in float, a growing share of the weighted layers (islands.py):
# where the ranking misses because every early tensor costs a little (a detector on
# thin-line drawings), the prefix holds.
PREFIX_SHARES = (0.05, 0.1, 0.15, 0.2, 0.25)


@dataclass(frozen=True)
class Judged:
    """A candidate on one part of the judged samples: the task's figures and the error of
    each group (closeness.py)."""

    accuracy: Optional[Accuracy]
    errors: np.ndarray

    @property
    def error(self) -> float:
        return float(self.errors.mean())


@dataclass
class Candidate:
    islands: Islands  # what the search asked to keep float, by which steps
    plan: QuantPlan  # as tried: one of the format's recipes, the islands' op ids
    result: QuantResult  # what quantize() did, for the manifest
    file: Path
    validation: Verdict
    judged: dict[str, Judged]  # by part: ALL and each of HALVES
    session: Optional[Session]  # kept open while the candidate is a contender, to time it
    seconds: float

    latency: Optional[dict] = None
    slower_than_float: bool = False  # mixed precision that gave the speed away
    confirmation: Optional[Judged] = None  # the chosen one's: the halves' choices, crossed over
    chosen_by: list[str] = field(default_factory=list)  # which parts' choice it was
    outputs_file: Optional[Path] = None  # its outputs on the judged samples, kept if a half may choose it

    def within(self, part: str = ALL) -> bool:
        acc = self.judged[part].accuracy
        return (self.validation.passed and not self.slower_than_float
                and (acc is None or bool(acc.within_budget)))

    @property
    def holds_with_margin(self) -> bool:
        """Within budget with the low end of every floored interval clear of its floor."""
        acc = self.judged[ALL].accuracy
        return self.within() and all(m.low >= m.floor for m in (acc.metrics if acc else ()) if m.floor is not None)

    def error(self, part: str = ALL) -> float:
        return self.judged[part].error

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    @property
    def falls_back_to_float(self) -> bool:
        """Part of it stays float: it has to beat the float model to be worth shipping."""
        return bool(self.result.float_ops)

    def summary(self) -> str:
        """One line for the progress display: what it keeps float, its figure, its error, its seconds."""
        acc = self.judged[ALL].accuracy
        figure = headline(acc.metrics) if acc is not None and acc.metrics else None
        measured = figure.describe(interval=False) if figure is not None else f"cos {self.validation.cosine:.4f}"
        return (f"{self.islands.describe()}: {measured} (selection), answer error {self.error():.3f}, "
                f"{self.seconds:.1f} s")

    def trail(self) -> dict:
        acc = self.judged[ALL].accuracy
        figure = headline(acc.metrics) if acc is not None else None
        confirmed = self.confirmation.accuracy if self.confirmation is not None else None
        conf = headline(confirmed.metrics) if confirmed is not None else None
        describe = lambda m: {"metric": m.name, "value": round(m.value, 4), "low": round(m.low, 4),  # noqa: E731
                              "samples": m.samples, "groups": m.groups}
        kept = self.islands.to_dict()
        return {
            "recipe": self.recipe.to_dict(),
            # The steps that kept ops float and how many stayed float (the chosen one's ops are
            # the artifact's `quantization.float_ops`).
            **({"keeps_float": {**kept, "ops": len(self.result.float_ops)}} if kept else {}),
            "selection": describe(figure) if figure is not None else None,  # the samples that chose: optimistic
            "answer_error": round(self.error(), 5),  # closeness.py: what candidates are ranked by
            "cosine": round(acc.cosine if acc is not None else self.validation.cosine, 5),
            "parity": self.validation.passed,
            "within_budget": self.within(),
            "holds_with_margin": self.holds_with_margin,
            **({"slower_than_float": True} if self.slower_than_float else {}),
            **({"chosen_by": self.chosen_by} if self.chosen_by else {}),
            **({"confirmation": describe(conf)} if conf is not None else {}),
            "p50_ms": self.latency["p50_ms"] if self.latency else None,
            "size_bytes": self.file.stat().st_size,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class SearchContext:
    profile: TargetProfile
    host: HostInfo
    refs: References
    calibration: dict
    budget: Budget
    prefer: str = "balanced"  # request.PREFERENCES

    @property
    def evaluation(self) -> Evaluation:
        """The judged samples (validate.torch_references makes them with PyTorch's references)."""
        if self.refs.evaluation is None:
            raise BuildError("PyTorch's references hold no judged samples: a search needs them")
        return self.refs.evaluation

    @property
    def split(self) -> Split:
        """How the judged samples are split for choosing and confirming (holdout.py)."""
        split = self.evaluation.split
        if split is None:
            raise BuildError("the judged samples are not split: a search chooses on some and confirms on others")
        return split


def _outputs(fmt, plan: QuantPlan, exported: Exported, session: Session, indices: np.ndarray,
             ctx: SearchContext) -> dict:
    """A candidate's outputs on the judged samples at `indices`: the artifact's own, unless
    the judged samples are its calibration samples: then each fold's come from the plan
    calibrated without that fold (holdout.py)."""
    ev, split = ctx.evaluation, ctx.split
    if not (split.crossfit and plan.precision.calibrated):  # nothing of the judged samples went into it
        return run_samples(session.run, {k: v[indices] for k, v in ev.inputs.items()})

    def run_fold(fold, inputs):
        with tempfile.TemporaryDirectory(prefix="edgepack-fold-") as tmp:
            out = Path(tmp) / f"fold{fold}{fmt.suffix}"
            fmt.quantize(exported, out, ctx.profile, plan, split.calibration_without(fold, ctx.calibration))
            return run_samples(open_artifact(fmt.name, out, fmt.layout(ctx.profile), ctx.profile, ctx.refs).run, inputs)

    return split.crossfitted(indices, ev.inputs, run_fold)


def _judge(outputs: dict, indices: np.ndarray, part: Optional[str], fmt_name: str, precision: Precision,
           ctx: SearchContext) -> Judged:
    """The task's figures and per-group errors of outputs on the judged samples at `indices`."""
    full = ctx.evaluation
    ev, budget = (full if len(indices) == full.count else full.subset(indices)), ctx.budget
    accuracy = measure_on(outputs, ev, budget, build_host(ctx.host),
                          indicative=not ctx.profile.matches_host(ctx.host, fmt_name, precision.name), split=part)
    errors = budget.judged_as.sample_errors(outputs, ev.outputs, budget.answer)
    return Judged(accuracy, group_errors(errors, ev.groups))


def _try(fmt, islands: Islands, plan: QuantPlan, exported: Exported, out: Path, ctx: SearchContext) -> Candidate:
    start = time.perf_counter()
    precision = plan.precision
    result = fmt.quantize(exported, out, ctx.profile, plan, ctx.calibration)
    if not isinstance(result, QuantResult):
        raise BuildError(f"format {fmt.name}'s quantize() returned {type(result).__name__}, not an "
                         "edgepack.formats.QuantResult; return one (docs/extending.md)")
    layout = fmt.layout(ctx.profile)
    # A candidate the runtime cannot load or run is a rejected candidate, not a failed build.
    with mapped(BuildError, f"the runtime cannot load or run this {fmt.name}-{precision.name} candidate"):
        validation, session = check_parity(fmt.name, precision.name, out, layout, ctx.profile, ctx.host, ctx.refs,
                                           ctx.budget)
        split = ctx.split
        everything = split.indices(ALL)
        outputs = _outputs(fmt, plan, exported, session, everything, ctx)
        judged = {ALL: _judge(outputs, everything, None, fmt.name, precision, ctx)}
        for half in HALVES:
            rows = split.indices(half)
            judged[half] = _judge({k: v[rows] for k, v in outputs.items()}, rows, None, fmt.name, precision, ctx)
    candidate = Candidate(islands, plan, result, out, validation, judged, session, 0.0)
    if not any(candidate.within(part) for part in judged):
        candidate.session = None  # only contenders are timed
    if any(candidate.within(half) for half in HALVES):  # the crossing over reads them: not computed twice
        candidate.outputs_file = out.with_name(f"{out.name}.outputs.npz")
        np.savez(candidate.outputs_file, **outputs)
    candidate.seconds = time.perf_counter() - start
    return candidate


def _tied(candidate: Candidate, best: Candidate, part: str) -> bool:
    """Whether `candidate`'s error is within one standard error of `best`'s, paired over the
    groups of `part` (both ran on the same ones)."""
    diff = candidate.judged[part].errors - best.judged[part].errors
    if len(diff) < MIN_GROUPS_TO_TRADE:
        return bool(np.all(diff <= 0))
    return float(diff.mean()) <= float(diff.std(ddof=1)) / math.sqrt(len(diff))


def _closest_miss(candidates: list[Candidate], part: str) -> Candidate:
    """When none is within budget: the one closest to it, whose figures tell the user how far off it is."""
    def key(c):
        acc = c.judged[part].accuracy
        figure = headline(acc.metrics) if acc is not None and acc.metrics else None
        margin = (figure.value - (figure.floor or 0.0)) if figure is not None else 0.0
        return c.validation.passed, margin, -c.error(part)
    return max((c for c in candidates if not c.slower_than_float), key=key)


def _time(candidates: list[Candidate], fmt, fp32: Path, ctx: SearchContext) -> None:
    """Time the contenders (within budget on some part) where this host runs the target's
    kernels, with the float model when a mixed candidate is among them."""
    timed = [c for c in candidates if c.session is not None and c.validation.host_matches_target]
    sessions = [c.session for c in timed]
    mixed = [c for c in timed if c.falls_back_to_float]
    if mixed:  # mixed precision has to beat the float model it falls back to
        sessions.append(open_artifact(fmt.name, fp32, fmt.layout(ctx.profile), ctx.profile, ctx.refs))
    timings = compare_latency(sessions, ctx.refs, ctx.host) if sessions else []
    for c, latency in zip(timed, timings, strict=False):
        c.latency = latency
        if c.falls_back_to_float:  # (timings[-1] is then the float model's)
            c.slower_than_float = not clearly_faster(latency, timings[-1])
    for c in candidates:
        c.session = None


def _choose(candidates: list[Candidate], part: str, prefer: str) -> Candidate:
    """The rule's choice on `part` of the judged samples (see the module's docstring)."""
    within = [c for c in candidates if c.within(part)]
    if not within:
        return _closest_miss(candidates, part)
    faithful = min(within, key=lambda c: c.error(part))
    # Speed decides only where this host runs the target's kernels: elsewhere (a Pi target
    # built on x86) its timings say nothing about the target, and accuracy alone chooses.
    timed = [(c, c.latency) for c in within if c.latency is not None]
    if prefer == "accuracy" or len(timed) < len(within):
        return faithful
    pool = timed if prefer == "speed" else [(c, t) for c, t in timed if _tied(c, faithful, part)]
    fastest = min(pool, key=lambda pair: pair[1]["p50_ms"])[1]
    return min((c for c, t in pool if not clearly_faster(fastest, t)), key=lambda c: c.error(part))


def _confirm(chosen: Candidate, candidates: list[Candidate], fmt, precision: Precision, exported: Exported,
             ctx: SearchContext) -> Judged:
    """Each half's choice run on the other half, pooled: figures (and errors) of the rule on
    samples it did not choose on (holdout.py)."""
    split = ctx.split
    pooled: dict[str, np.ndarray] = {}
    for half in HALVES:
        pick = _choose(candidates, half, ctx.prefer)
        pick.chosen_by.append(half)
        rows = split.indices(split.other(half))
        if pick.outputs_file is not None:
            with np.load(pick.outputs_file) as saved:
                outputs = {name: saved[name][rows] for name in saved.files}
        else:  # the closest miss: run it again
            session = open_artifact(fmt.name, pick.file, fmt.layout(ctx.profile), ctx.profile, ctx.refs)
            outputs = _outputs(fmt, pick.plan, exported, session, rows, ctx)
        for name, value in outputs.items():
            pooled.setdefault(name, np.empty((len(split.folds),) + value.shape[1:], value.dtype))[rows] = value
    everything = split.indices(ALL)
    return _judge(pooled, everything, CONFIRMATION, fmt.name, precision, ctx)


def _walk(steps, attempt, previous: Candidate) -> None:
    """Try each step's (recipe, islands) pairs (more float at each step: only slower) until
    one holds with margin, or a step lowers the error no further than the one before it."""
    for tries in steps:
        found = [c for c in (attempt(recipe, islands) for recipe, islands in tries) if c is not None]
        if not found or any(c.holds_with_margin for c in found):
            return
        best = min(found, key=lambda c: c.error())
        if best.error() >= previous.error():
            return
        previous = best


def _bisect_prefix(bases: list[Candidate], attempt) -> None:
    """The first layers in float: each base with the largest share first. Where that is not
    within budget, a smaller share will not be either (float only takes error away), so the
    walk ends there. Else, from the base that came closest, bisect PREFIX_SHARES for the
    smallest share within budget (more float is only slower): 2 + at most 3 candidates for
    5 shares, where walking them one by one from both bases tried up to 10 (issue 28)."""
    largest = [(base, attempt(base.recipe, base.islands.with_prefix(PREFIX_SHARES[-1]))) for base in bases]
    largest = [(base, c) for base, c in largest if c is not None]
    if not largest:
        return
    within = [(base, c) for base, c in largest if c.within()]
    if not within:
        return
    base, _ = min(within, key=lambda pair: pair[1].error())
    low, high = 0, len(PREFIX_SHARES) - 1  # PREFIX_SHARES[high] is within budget
    while low < high:
        middle = (low + high) // 2
        candidate = attempt(base.recipe, base.islands.with_prefix(PREFIX_SHARES[middle]))
        if candidate is not None and candidate.within():
            high = middle
        else:
            low = middle + 1


def _scope(fmt, precision: Precision, exported: Exported, ctx: SearchContext) -> Islands:
    """What every candidate keeps float for the task: a detector's tail, whose decode must
    keep its scales (islands.py), where the format gives the graph to find it in."""
    tail = precision.calibrated and ctx.budget.judged_as.decode_tail_float
    if tail and exported.graph is None:
        log.warning(f"{fmt.name}-{precision.name}: the format's export gives no op graph, so the detector's tail is "
                    "quantized too; its detection figures judge whether that holds")
        tail = False
    return Islands(tail=tail)


def search(fmt, precision: Precision, exported: Exported, out: Path,
           ctx: SearchContext) -> tuple[Candidate, list[dict]]:
    """Quantize `exported` to `precision` with each recipe (and float islands if needed);
    leave the chosen candidate at `out`, its crossed-over figures as its `confirmation`.
    Returns it and the trail of every candidate."""
    tried: list[Candidate] = []
    errors: list[str] = []
    name = f"{fmt.name}-{precision.name}"

    def attempt(recipe: Recipe, islands: Islands) -> Optional[Candidate]:
        number = len(tried) + len(errors) + 1
        file = out.with_name(f".{out.stem}.candidate{number - 1}{out.suffix}")
        try:
            plan = QuantPlan(precision, recipe, islands.ops(exported.graph))
            same = next((c for c in tried if c.plan == plan), None)
            if same is not None:  # a share that rounds to the ops of one tried (or to none) is that one
                return same
            tried.append(_try(fmt, islands, plan, exported, file, ctx))
        except BuildError as exc:
            errors.append(str(exc))
            remove_artifact(fmt, file)
            log.info(f"{name} candidate {number}: failed ({exc})")
            return None
        log.info(f"{name} candidate {number}: {tried[-1].summary()}")
        return tried[-1]

    scope = _scope(fmt, precision, exported, ctx)
    for recipe in fmt.recipes(ctx.profile, precision):
        attempt(Recipe(recipe), scope)
    if not tried:
        raise BuildError(errors[0])
    plain = list(tried)
    explore = precision.calibrated and not any(c.holds_with_margin for c in tried)
    if explore and supports(fmt, MIXED_PRECISION):
        base = min(plain, key=lambda c: c.error())
        try:
            ranked = [tuple(group) for group in fmt.sensitive_layers(exported.path, base.file, ctx.calibration,
                                                                    ctx.profile)]
        except Exception as exc:  # the libraries' own debugging tools: no ranking, no mixed precision
            errors.append(f"ranking layers for mixed precision failed: {root_cause(exc)}")
            ranked = []
        counts = [n for n in MIXED_PRECISION_STEPS if n <= len(ranked) * MAX_FLOAT_SHARE]
        _walk(([(base.recipe, base.islands.with_ranked(tuple(ranked[:n])))] for n in counts), attempt, base)
    if explore and exported.graph is not None and not any(c.holds_with_margin for c in tried):
        # The preset, and the recipe that came closest with the whole graph quantized: the
        # best one for the early layers need not be the best once they are float.
        _bisect_prefix(list({id(c): c for c in (plain[0], min(plain, key=lambda c: c.error()))}.values()), attempt)
    try:
        _time(tried, fmt, exported.path, ctx)
        chosen = _choose(tried, ALL, ctx.prefer)
        chosen.confirmation = _confirm(chosen, tried, fmt, precision, exported, ctx)
    finally:
        for c in tried:
            if c.outputs_file is not None:
                c.outputs_file.unlink(missing_ok=True)
    trail = [dict(c.trail(), chosen=c is chosen) for c in tried] + [{"error": e} for e in errors]
    move_artifact(fmt, chosen.file, out)
    chosen.file = out
    for c in tried:
        if c is not chosen:
            remove_artifact(fmt, c.file)
    return chosen, trail
