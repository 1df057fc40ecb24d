"""Accuracy-driven quantization: try the target's recipes, then float islands where they are
needed, and report figures from samples the choice did not see (holdout.py).

No recipe wins on every model (docs/quantization.md), so every recipe the target profile
lists is quantized and run on the judged samples. Candidates are ranked by a continuous
error of what the user sees (closeness.py), not only by a count near the floor. When no
candidate clears its floors with margin (the low end of its interval), the search explores
float islands (islands.py): the most sensitive layers of the most faithful recipe (one
layer, then the most it allows, then the fewest that hold as well, by bisection), then the
first layers: the largest share first, then the smallest share within budget by bisection.

Each candidate gets a first look (a sequential test, `_screen`): cross-fitted, the artifact
on the samples that calibrated it; with --eval, the first fold of the judged samples. When
the high end of a floored figure's interval there is below its floor, or the candidate
failed parity (it could not be chosen either way), it is dropped (`screened_out` in the
trail) before the rest of the samples, and the folds' quantizations, are spent on it.

What stays float is decided here alone, as op ids of the exported graph
(`QuantPlan.float_ops`): a format that returns its graph in its `Exported` gets the
detector's tail and the prefix without a line about them. Then the choice rule
(`_choose`), by `--prefer`:

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
from typing import Callable, Optional

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
# A record with this extra says which candidate is under way: the status line alone shows it.
log = logging.getLogger(__name__)
STATUS_LINE_ONLY = {"status_line_only": True}

# Layers kept in float at each mixed-precision step (the most sensitive first), never more
# than MAX_FLOAT_SHARE of the ranked layers: float islands cost the speed int8 is for, and a
# mixed candidate that is not faster than the float model is no candidate at all.
MIXED_PRECISION_STEPS = (1, 2, 4, 8, 16)
MAX_FLOAT_SHARE = 0.25
# Then the first layers in float, a growing share of the weighted layers (islands.py):
# where the ranking misses because every early tensor costs a little (a detector on
# thin-line drawings), the prefix holds.
PREFIX_SHARES = (0.05, 0.1, 0.15, 0.2, 0.25)
# A candidate's first look (`_screen`): a candidate whose floored figure cannot reach its
# floor there is dropped before the rest of the samples (and, cross-fitted, the folds'
# quantizations) are spent on it; only when the look's interval rests on this many groups.
SCREEN = "screen"
SCREEN_MIN_GROUPS = 2


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

    @property
    def screened_out(self) -> bool:
        """Dropped after its first look (`_reachable`): judged on SCREEN only."""
        return ALL not in self.judged

    def within(self, part: str = ALL) -> bool:
        if part not in self.judged:
            return False
        acc = self.judged[part].accuracy
        return (self.validation.passed and not self.slower_than_float
                and (acc is None or bool(acc.within_budget)))

    @property
    def holds_with_margin(self) -> bool:
        """Within budget with the low end of every floored interval clear of its floor."""
        if not self.within():
            return False
        acc = self.judged[ALL].accuracy
        return all(m.low >= m.floor for m in (acc.metrics if acc else ()) if m.floor is not None)

    def error(self, part: str = ALL) -> float:
        return self.judged[part].error

    def first_look_error(self) -> float:
        """The error on SCREEN, which every candidate has: how the exploration compares a
        candidate that was dropped with one that was not (paired: the same samples)."""
        return self.judged[SCREEN].error

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    @property
    def falls_back_to_float(self) -> bool:
        """Part of it stays float: it has to beat the float model to be worth shipping."""
        return bool(self.result.float_ops)

    def summary(self) -> str:
        """One line for the progress display: what it keeps float, its figure, its error, its seconds."""
        part = SCREEN if self.screened_out else ALL
        acc = self.judged[part].accuracy
        figure = headline(acc.metrics) if acc is not None and acc.metrics else None
        measured = figure.describe(interval=True) if figure is not None else f"cos {self.validation.cosine:.4f}"
        how = "first look: out of reach, dropped" if self.screened_out else "selection"
        return (f"{self.islands.describe()}: {measured} ({how}), answer error {self.error(part):.3f}, "
                f"{self.seconds:.1f} s")

    def trail(self) -> dict:
        part = SCREEN if self.screened_out else ALL
        acc = self.judged[part].accuracy
        figure = headline(acc.metrics) if acc is not None else None
        confirmed = self.confirmation.accuracy if self.confirmation is not None else None
        conf = headline(confirmed.metrics) if confirmed is not None else None
        describe = lambda m: {"metric": m.name, "value": round(m.value, 4), "low": round(m.low, 4),  # noqa: E731
                              "samples": m.samples, "groups": m.groups}
        kept = self.islands.to_dict()
        shown = describe(figure) if figure is not None else None
        return {
            "recipe": self.recipe.to_dict(),
            # The steps that kept ops float and how many stayed float (the chosen one's ops are
            # the artifact's `quantization.float_ops`).
            **({"keeps_float": {**kept, "ops": len(self.result.float_ops)}} if kept else {}),
            # The samples that chose (optimistic); or, for a candidate dropped after its first
            # look, that look's figure (its interval's high end, and the floor it missed).
            **({"screened_out": figure and {**describe(figure), "high": round(figure.high, 4), "floor": figure.floor}}
               if self.screened_out else {"selection": shown}),
            "answer_error": round(self.error(part), 5),  # closeness.py: what candidates are ranked by
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


def _reachable(judged: Judged) -> bool:
    """Whether a candidate's first look leaves its floors within reach: False when the high
    end of a floored figure's interval is below its floor (the rest of the samples would
    not lift it there), and only when that interval rests on at least SCREEN_MIN_GROUPS."""
    acc = judged.accuracy
    return not any(m.floor is not None and m.high < m.floor and (m.groups or m.samples) >= SCREEN_MIN_GROUPS
                   for m in (acc.metrics if acc is not None else ()))


def _screen(plan: QuantPlan, session: Session, ctx: SearchContext) -> tuple[np.ndarray, dict]:
    """The first look at a candidate, before the rest of the samples are spent on it (a
    sequential test): its rows and outputs. Cross-fitted, the artifact itself on every judged
    sample: they calibrated it, so its figure is optimistic, which is the safe side for
    dropping it, and the folds' quantizations are what a dropped candidate saves. With
    separate judged samples, the first fold of them."""
    ev, split = ctx.evaluation, ctx.split
    if split.crossfit and plan.precision.calibrated:
        rows = split.indices(ALL)
    else:
        rows = np.flatnonzero(split.folds == 0)
    return rows, run_samples(session.run, {k: v[rows] for k, v in ev.inputs.items()})


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
        rows, screened = _screen(plan, session, ctx)
        judged = {SCREEN: _judge(screened, rows, None, fmt.name, precision, ctx)}
        candidate = Candidate(islands, plan, result, out, validation, judged, session, 0.0)
        if validation.passed and _reachable(judged[SCREEN]):
            _complete(candidate, fmt, exported, ctx, (rows, screened))
        else:
            candidate.session = None
    candidate.seconds = time.perf_counter() - start
    return candidate


def _complete(candidate: Candidate, fmt, exported: Exported, ctx: SearchContext,
              screened: Optional[tuple[np.ndarray, dict]] = None) -> None:
    """A candidate's figures on all the judged samples and on each half. `screened`: the
    first look's rows and outputs, reused where they are the artifact's own outputs."""
    split = ctx.split
    everything = split.indices(ALL)
    session = candidate.session or open_artifact(fmt.name, candidate.file, fmt.layout(ctx.profile), ctx.profile,
                                                 ctx.refs)
    plan, precision = candidate.plan, candidate.plan.precision
    if screened is not None and not (split.crossfit and precision.calibrated):  # the first fold's, then the rest
        rows, outputs = screened
        rest = np.setdiff1d(everything, rows)
        more = _outputs(fmt, plan, exported, session, rest, ctx) if len(rest) else {}
        order = np.argsort(np.concatenate([rows, rest]))
        outputs = {k: np.concatenate([v, more[k]])[order] if more else v[order] for k, v in outputs.items()}
    else:
        outputs = _outputs(fmt, plan, exported, session, everything, ctx)
    judged = candidate.judged
    judged[ALL] = _judge(outputs, everything, None, fmt.name, precision, ctx)
    for half in HALVES:
        rows = split.indices(half)
        judged[half] = _judge({k: v[rows] for k, v in outputs.items()}, rows, None, fmt.name, precision, ctx)
    candidate.session = session if any(candidate.within(part) for part in (ALL, *HALVES)) else None  # contenders
    if any(candidate.within(half) for half in HALVES):  # the crossing over reads them: not computed twice
        candidate.outputs_file = candidate.file.with_name(f"{candidate.file.name}.outputs.npz")
        np.savez(candidate.outputs_file, **outputs)


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
    return max((c for c in candidates if not c.slower_than_float and not c.screened_out), key=key)


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


def _fewest(low: int, high: int, attempt_at: Callable[[int], Optional[Candidate]],
            holds: Callable[[Candidate], bool]) -> None:
    """Bisect the steps low..high (more float at each: only slower) for the fewest whose
    candidate holds, knowing that step `high`'s does."""
    while low < high:
        middle = (low + high) // 2
        candidate = attempt_at(middle)
        if candidate is not None and holds(candidate):
            high = middle
        else:
            low = middle + 1


def _rank_float(counts: list[int], ranked: list[tuple], base: Candidate, attempt) -> None:
    """The most sensitive layers of `base` in float, `counts[i]` of them at step i. The first
    step first (one layer is often enough); else the last: where that is not within budget,
    fewer will not be either (float only takes error away); else the fewest that hold as
    the last does (with margin, or within budget), by bisection. A walk that stopped at the
    first step not lowering the error missed U^2-Net-p's: 1 and 2 layers tied, 4 held."""
    def at(step: int) -> Optional[Candidate]:
        return attempt(base.recipe, base.islands.with_ranked(tuple(ranked[:counts[step]])))

    first = at(0)
    if len(counts) < 2 or (first is not None and first.holds_with_margin):
        return
    last = at(len(counts) - 1)
    if last is None or not last.within():
        return
    holds = (lambda c: c.holds_with_margin) if last.holds_with_margin else (lambda c: c.within())
    if first is None or not holds(first):
        _fewest(1, len(counts) - 1, at, holds)


def _bisect_prefix(bases: list[Candidate], attempt) -> None:
    """The first layers in float: each base with the largest share first. Where that is not
    within budget, a smaller share will not be either (float only takes error away), so the
    step ends there. Else, from the base that came closest, bisect PREFIX_SHARES for the
    smallest share within budget (more float is only slower): 2 + at most 3 candidates for
    5 shares, where walking them one by one from both bases tried up to 10 (issue 28)."""
    largest = [(base, attempt(base.recipe, base.islands.with_prefix(PREFIX_SHARES[-1]))) for base in bases]
    largest = [(base, c) for base, c in largest if c is not None]
    within = [(base, c) for base, c in largest if c.within()]
    if not within:
        return
    base, _ = min(within, key=lambda pair: pair[1].error())
    _fewest(0, len(PREFIX_SHARES) - 1,
            lambda step: attempt(base.recipe, base.islands.with_prefix(PREFIX_SHARES[step])), lambda c: c.within())


def _most_faithful(candidates: list[Candidate]) -> Candidate:
    """The lowest error on all the judged samples; among candidates all dropped after their
    first look, the lowest error there."""
    completed = [c for c in candidates if not c.screened_out]
    if completed:
        return min(completed, key=lambda c: c.error())
    return min(candidates, key=lambda c: c.first_look_error())


def _scope(fmt, precision: Precision, exported: Exported, ctx: SearchContext) -> Islands:
    """What every candidate keeps float for the task: a detector's tail, whose decode must
    keep its scales (islands.py), where the format gives the graph to find it in."""
    tail = precision.calibrated and ctx.budget.judged_as.decode_tail_float
    if tail and exported.graph is None:
        log.warning(f"{fmt.name}-{precision.name}: the format's export gives no op graph, so the detector's tail is "
                    "quantized too; its detection figures judge whether that holds")
        tail = False
    return Islands(tail=tail)


def _pace(number: int, recipes: int, tried: list[Candidate]) -> str:
    """Where candidate `number` stands: of the recipes, with what they should still take at
    the pace of those measured so far; after them, the float islands (as many as they need)."""
    if number > recipes:
        return " (float islands)"
    if not tried:
        return f" of {recipes}"
    minutes, seconds = divmod(round(sum(c.seconds for c in tried) / len(tried) * (recipes - number + 1)), 60)
    return f" of {recipes}, about {minutes}:{seconds:02d} left for the recipes"


def search(fmt, precision: Precision, exported: Exported, out: Path,
           ctx: SearchContext) -> tuple[Candidate, list[dict]]:
    """Quantize `exported` to `precision` with each recipe (and float islands if needed);
    leave the chosen candidate at `out`, its crossed-over figures as its `confirmation`.
    Returns it and the trail of every candidate."""
    tried: list[Candidate] = []
    errors: list[str] = []
    name = f"{fmt.name}-{precision.name}"

    recipes = fmt.recipes(ctx.profile, precision)

    def attempt(recipe: Recipe, islands: Islands) -> Optional[Candidate]:
        number = len(tried) + len(errors) + 1
        log.info(f"{name} candidate {number}{_pace(number, len(recipes), tried)}: {islands.describe()}",
                 extra=STATUS_LINE_ONLY)
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
    for recipe in recipes:
        attempt(Recipe(recipe), scope)
    if not tried:
        raise BuildError(errors[0])
    plain = list(tried)
    explore = precision.calibrated and not any(c.holds_with_margin for c in tried)
    if explore and supports(fmt, MIXED_PRECISION):
        base = _most_faithful(plain)
        try:
            ranked = [tuple(group) for group in fmt.sensitive_layers(exported.path, base.file, ctx.calibration,
                                                                    ctx.profile)]
        except Exception as exc:  # the libraries' own debugging tools: no ranking, no mixed precision
            errors.append(f"ranking layers for mixed precision failed: {root_cause(exc)}")
            ranked = []
        counts = [n for n in MIXED_PRECISION_STEPS if n <= len(ranked) * MAX_FLOAT_SHARE]
        if counts:
            _rank_float(counts, ranked, base, attempt)
    if explore and exported.graph is not None and not any(c.holds_with_margin for c in tried):
        # The preset, and the recipe that came closest with the whole graph quantized: the
        # best one for the early layers need not be the best once they are float.
        _bisect_prefix(list({id(c): c for c in (plain[0], _most_faithful(plain))}.values()), attempt)
    if all(c.screened_out for c in tried):  # the closest miss, whose figures say how far off int8 is
        with mapped(BuildError, f"the runtime cannot run this {name} candidate on all the judged samples"):
            _complete(_most_faithful(tried), fmt, exported, ctx)
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
