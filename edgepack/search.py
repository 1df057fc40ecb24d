"""Accuracy-driven quantization: try the target's recipes, then float islands where they are
needed, choose on one part of the judged samples and report the other (holdout.py).

No recipe wins on every model (docs/quantization.md), so every recipe the target profile
lists is quantized and measured on the *selection* samples. Candidates are ranked by a
continuous error of what the user sees (closeness.py), not only by a count near the floor.
When no candidate clears its floor with margin (the low end of its selection interval),
the search explores float islands: the most sensitive layers of the best recipe, a few more
at each step, then a growing share of the first layers (formats/tail.py); each walk stops
when a step holds with margin or stops lowering the error. Then:

- `balanced` (default): the fastest candidate whose error is within one standard error
  (paired over the selection groups) of the most faithful candidate's;
- `accuracy`: the most faithful; `speed`: the fastest that clears the floors.

The chosen candidate alone is then run on the *confirmation* samples, which nothing above
looked at: those figures are the artifact's accuracy, and they decide whether it ships.
Every candidate is recorded in the artifact's `quantization.search` trail with its
selection figures (labelled so), its error, its speed if timed and its seconds.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edgepack_runtime.backends import Session
from edgepack_runtime.intervals import t_quantile
from edgepack_runtime.manifest import Accuracy, Validation
from edgepack_runtime.parity import run_samples
from edgepack_runtime.precision import is_calibrated
from edgepack_runtime.task_fidelity import headline

from .budget import Budget
from .closeness import group_errors, sample_errors
from .errors import BuildError, mapped
from .formats import MIXED_PRECISION, move_artifact, remove_artifact, supports
from .formats.errors import root_cause
from .holdout import CONFIRMATION, SELECTION
from .validate import (References, build_host, check_parity, clearly_faster, compare_latency, measure_on,
                       open_artifact)

__all__ = ["Candidate", "SearchContext", "search"]

# Layers kept in float at each mixed-precision step (the most sensitive first), never more
# than MAX_FLOAT_SHARE of the ranked layers: float islands cost the speed int8 is for, and a
# mixed candidate that is not faster than the float model is no candidate at all.
MIXED_PRECISION_STEPS = (1, 2, 4, 8)
MAX_FLOAT_SHARE = 0.25
# Then the first layers in float, a growing share of the weighted layers (formats/tail.py):
# where the ranking misses because every early tensor costs a little (a detector on
# thin-line drawings), the prefix holds.
PREFIX_SHARES = (0.05, 0.1, 0.15, 0.2, 0.25)


@dataclass
class Candidate:
    recipe: dict  # as tried: one of the format's recipes, maybe with float_layers
    settings: dict  # what quantize() returned, for the manifest
    file: Path
    validation: Validation
    selection: Optional[Accuracy]  # on the selection samples: what the search chose by
    errors: np.ndarray  # closeness.py, per selection group: what candidates are ranked by
    session: Optional[Session]  # kept open while the candidate is a contender, to time it
    seconds: float

    latency: Optional[dict] = None
    slower_than_float: bool = False  # mixed precision that gave the speed away
    confirmation: Optional[Accuracy] = None  # the chosen one's, on the confirmation samples

    @property
    def within_budget(self) -> bool:
        return (self.validation.passed and not self.slower_than_float
                and (self.selection is None or bool(self.selection.within_budget)))

    @property
    def holds_with_margin(self) -> bool:
        """Within budget with the low end of every floored selection interval clear of its floor."""
        return self.within_budget and all(m.low >= m.floor for m in (self.selection.metrics if self.selection else ())
                                          if m.floor is not None)

    @property
    def error(self) -> float:
        return float(self.errors.mean())

    @property
    def falls_back_to_float(self) -> bool:
        """Part of it stays float: it has to beat the float model to be worth shipping."""
        return bool(self.recipe.get("float_layers") or self.recipe.get("float_tail") or self.recipe.get("float_prefix"))

    def trail(self) -> dict:
        sel = self.selection
        figure = headline(sel.metrics) if sel is not None else None
        selection = ({"split": SELECTION, "metric": figure.name, "value": round(figure.value, 4),
                      "low": round(figure.low, 4), "samples": figure.samples, "groups": figure.groups}
                     if figure is not None else None)
        conf = headline(self.confirmation.metrics) if self.confirmation is not None else None
        return {
            "recipe": self.recipe,
            "selection": selection,
            "answer_error": round(self.error, 5),  # closeness.py: what candidates are ranked by
            "cosine": round(sel.cosine if sel is not None else self.validation.cosine, 5),
            "parity": self.validation.passed,
            "within_budget": self.within_budget,
            "holds_with_margin": self.holds_with_margin,
            **({"slower_than_float": True} if self.slower_than_float else {}),
            **({"confirmation": {"metric": conf.name, "value": round(conf.value, 4), "low": round(conf.low, 4),
                                 "samples": conf.samples, "groups": conf.groups}} if conf is not None else {}),
            "p50_ms": self.latency["p50_ms"] if self.latency else None,
            "size_bytes": self.file.stat().st_size,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class SearchContext:
    profile: object
    host: object
    refs: References
    calibration: dict
    budget: Budget
    prefer: str = "balanced"  # request.PREFERENCES


def _judged_outputs(fmt, precision: str, recipe: dict, fp32: Path, session: Session, part: str,
                    ctx: SearchContext) -> tuple[np.ndarray, dict]:
    """A candidate's outputs on one part of the judged samples: the artifact's own on
    separate eval samples; cross-fitted, each fold's from the recipe calibrated without it."""
    ev = ctx.refs.evaluation
    indices = ev.split.indices(part)

    def run_fold(fold, inputs):
        if fold is None:
            return run_samples(session.run, inputs)
        with tempfile.TemporaryDirectory(prefix="edgepack-fold-") as tmp:
            out = Path(tmp) / f"fold{fold}{fmt.suffix}"
            fmt.quantize(fp32, out, ctx.profile, precision, ev.split.calibration_without(fold, ctx.calibration),
                         recipe)
            fold_session = open_artifact(fmt.name, out, fmt.layout(ctx.profile), ctx.profile, ctx.refs)
            return run_samples(fold_session.run, inputs)

    return indices, ev.split.outputs(indices, ev.inputs, run_fold)


def _measure(fmt, precision: str, recipe: dict, fp32: Path, session: Session, part: str, ctx: SearchContext
             ) -> tuple[Accuracy, np.ndarray]:
    """Accuracy and per-group errors of a candidate on `part` of the judged samples."""
    indices, outputs = _judged_outputs(fmt, precision, recipe, fp32, session, part, ctx)
    ev = ctx.refs.evaluation.subset(indices)
    budget = ctx.budget
    accuracy = measure_on(outputs, ev, budget, build_host(ctx.host),
                          indicative=not ctx.profile.matches_host(ctx.host, fmt.name, precision), split=part)
    errors = sample_errors(budget.task, outputs, ev.outputs, budget.answer_output, budget.detection)
    return accuracy, group_errors(errors, ev.groups)


def _try(fmt, precision: str, recipe: dict, fp32: Path, out: Path, ctx: SearchContext) -> Candidate:
    start = time.perf_counter()
    settings = fmt.quantize(fp32, out, ctx.profile, precision, ctx.calibration, recipe)
    layout = fmt.layout(ctx.profile)
    # A candidate the runtime cannot load or run is a rejected candidate, not a failed build.
    with mapped(BuildError, f"the runtime cannot load or run this {fmt.name}-{precision} candidate"):
        validation, session = check_parity(fmt.name, precision, out, layout, ctx.profile, ctx.host, ctx.refs,
                                           ctx.budget)
        if ctx.refs.evaluation is not None:
            selection, errors = _measure(fmt, precision, recipe, fp32, session, SELECTION, ctx)
        else:
            selection, errors = None, np.array([1 - validation.cosine])
    candidate = Candidate(recipe, settings, out, validation, selection, errors, session, 0.0)
    if not candidate.within_budget:
        candidate.session = None  # only contenders are timed
    candidate.seconds = time.perf_counter() - start
    return candidate


def _tied(candidate: Candidate, best: Candidate) -> bool:
    """Whether `candidate`'s error is within one standard error of `best`'s, paired over the
    selection groups (both ran on the same ones)."""
    diff = candidate.errors - best.errors
    if len(diff) < 2:
        return float(diff.mean()) <= 0
    return float(diff.mean()) <= float(diff.std(ddof=1)) / math.sqrt(len(diff))


def _closest_miss(candidates: list[Candidate]) -> Candidate:
    """When none is within budget: the one closest to it, whose figures tell the user how far off it is."""
    def key(c):
        figure = headline(c.selection.metrics) if c.selection is not None and c.selection.metrics else None
        return c.validation.passed, (figure.value - (figure.floor or 0.0)) if figure is not None else 0.0, -c.error
    return max((c for c in candidates if not c.slower_than_float), key=key)


def _best(candidates: list[Candidate], fmt, fp32: Path, ctx: SearchContext) -> Candidate:
    within = [c for c in candidates if c.within_budget]
    # Speed decides only where this host runs the target's kernels: elsewhere (a Pi target
    # built on x86) its timings say nothing about the target, and accuracy alone chooses.
    timed = [c for c in within if c.validation.host_matches_target]
    sessions = [c.session for c in timed]
    mixed = [c for c in timed if c.falls_back_to_float]
    if mixed:  # mixed precision has to beat the float model it falls back to
        sessions.append(open_artifact(fmt.name, fp32, fmt.layout(ctx.profile), ctx.profile, ctx.refs))
    timings = compare_latency(sessions, ctx.refs, ctx.host) if sessions else []
    for c, latency in zip(timed, timings):
        c.latency = latency
    for c in mixed:
        c.slower_than_float = not clearly_faster(c.latency, timings[-1])
    for c in candidates:
        c.session = None
    within = [c for c in within if c.within_budget]
    if not within:
        return _closest_miss(candidates)
    faithful = min(within, key=lambda c: c.error)
    if ctx.prefer == "accuracy" or not all(c.validation.host_matches_target for c in within):
        return faithful
    pool = within if ctx.prefer == "speed" else [c for c in within if _tied(c, faithful)]
    fastest = min(pool, key=lambda c: c.latency["p50_ms"])
    return min((c for c in pool if not clearly_faster(fastest.latency, c.latency)), key=lambda c: c.error)


def _walk(steps, attempt, previous: Optional[Candidate]) -> None:
    """Try each step's recipes (more float at each step: only slower) until one holds with
    margin, or a step lowers the error no further than the one before it."""
    for recipes in steps:
        found = [c for c in (attempt(r) for r in recipes) if c is not None]
        if not found or any(c.holds_with_margin for c in found):
            return
        best = min(found, key=lambda c: c.error)
        if previous is not None and best.error >= previous.error:
            return
        previous = best


def search(fmt, precision: str, fp32: Path, out: Path, ctx: SearchContext) -> tuple[Candidate, list[dict]]:
    """Quantize `fp32` to `precision` with each recipe (and float islands if needed); leave
    the chosen candidate at `out`, with its confirmation figures as its accuracy. Returns
    it and the trail of every candidate."""
    tried: list[Candidate] = []
    errors: list[str] = []

    def attempt(recipe: dict) -> Optional[Candidate]:
        file = out.with_name(f".{out.stem}.candidate{len(tried) + len(errors)}{out.suffix}")
        try:
            tried.append(_try(fmt, precision, recipe, fp32, file, ctx))
            return tried[-1]
        except BuildError as exc:
            errors.append(str(exc))
            remove_artifact(fmt, file)
            return None

    for recipe in fmt.recipes(ctx.profile, precision):
        if is_calibrated(precision) and ctx.budget.task == "detect":
            recipe = {**recipe, "float_tail": True}  # formats/tail.py: the decode must keep its scales
        attempt(recipe)
    if not tried:
        raise BuildError(errors[0])
    plain = list(tried)
    explore = (is_calibrated(precision) and supports(fmt, MIXED_PRECISION) and ctx.refs.evaluation is not None
               and not any(c.holds_with_margin for c in tried))
    if explore:
        base = min(plain, key=lambda c: c.error)
        try:
            ranked = fmt.sensitive_layers(fp32, base.file, ctx.calibration, ctx.profile)
        except Exception as exc:  # the libraries' own debugging tools: no ranking, no mixed precision
            errors.append(f"ranking layers for mixed precision failed: {root_cause(exc)}")
            ranked = []
        counts = [n for n in MIXED_PRECISION_STEPS if n <= len(ranked) * MAX_FLOAT_SHARE]
        _walk(([{**base.recipe, "float_layers": [*base.recipe.get("float_layers", ()), *ranked[:n]]}]
               for n in counts), attempt, base)
    if explore and not any(c.holds_with_margin for c in tried):
        # The preset, and the recipe that came closest with the whole graph quantized: the
        # best one for the early layers need not be the best once they are float.
        bases = list({id(c): c for c in (plain[0], min(plain, key=lambda c: c.error))}.values())
        _walk(([{**c.recipe, "float_prefix": share} for c in bases] for share in PREFIX_SHARES), attempt,
              min(bases, key=lambda c: c.error))
    chosen = _best(tried, fmt, fp32, ctx)
    if ctx.refs.evaluation is not None:
        session = open_artifact(fmt.name, chosen.file, fmt.layout(ctx.profile), ctx.profile, ctx.refs)
        chosen.confirmation, _ = _measure(fmt, precision, chosen.recipe, fp32, session, CONFIRMATION, ctx)
    trail = [dict(c.trail(), chosen=c is chosen) for c in tried] + [{"error": e} for e in errors]
    move_artifact(fmt, chosen.file, out)
    chosen.file = out
    for c in tried:
        if c is not chosen:
            remove_artifact(fmt, c.file)
    return chosen, trail
