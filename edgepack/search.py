"""Accuracy-driven quantization: try the target's recipes, then mixed precision, keep the
fastest candidate within the accuracy budget (the most accurate of those equally fast:
validate.clearly_faster).

No recipe wins on every model (docs/quantization.md), so every recipe the target profile
lists is quantized and measured on data it was not calibrated on. When none meets the
budget and the format can rank its layers, the most sensitive layers of the best recipe
are kept in float, a few more at each step, until the budget holds; failing that, a
growing share of the first layers (formats/tail.py). Every candidate is
recorded in the artifact's `quantization.search` trail: what was tried and what it measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgepack_runtime.backends import Session
from edgepack_runtime.manifest import Accuracy, Validation
from edgepack_runtime.precision import is_calibrated
from edgepack_runtime.task_fidelity import headline

from .budget import Budget
from .errors import BuildError, mapped
from .formats import MIXED_PRECISION, move_artifact, remove_artifact, supports
from .formats.errors import root_cause
from .validate import References, clearly_faster, compare_latency, open_artifact, validate_artifact

__all__ = ["Candidate", "search"]

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
    accuracy: Optional[Accuracy]
    session: Optional[Session]  # kept open while the candidate is a contender, to time it
    seconds: float

    latency: Optional[dict] = None
    slower_than_float: bool = False  # mixed precision that gave the speed away

    @property
    def within_budget(self) -> bool:
        return (self.validation.passed and not self.slower_than_float
                and (self.accuracy is None or bool(self.accuracy.within_budget)))

    @property
    def score(self) -> tuple[float, float]:
        """What candidates are ranked by: the task's headline figure's margin over its floor
        (task_fidelity.headline), ties broken by the outputs' cosine (the golden cosine
        without eval samples)."""
        acc = self.accuracy
        cosine = acc.cosine if acc is not None else self.validation.cosine
        figure = headline(acc.metrics) if acc is not None else None
        return (figure.value - (figure.floor or 0.0) if figure is not None else cosine), cosine

    @property
    def falls_back_to_float(self) -> bool:
        """Part of it stays float: it has to beat the float model to be worth shipping."""
        return bool(self.recipe.get("float_layers") or self.recipe.get("float_tail") or self.recipe.get("float_prefix"))

    def trail(self) -> dict:
        acc = self.accuracy
        figure = headline(acc.metrics) if acc is not None else None
        return {
            "recipe": self.recipe,
            "cosine": round(acc.cosine if acc is not None else self.validation.cosine, 5),
            **({"metric": figure.name, "value": round(figure.value, 4)} if figure is not None else {}),
            "top1_agreement": acc.top1_agreement if acc else None,
            "top1": acc.top1 if acc else None,
            "parity": self.validation.passed,
            "within_budget": self.within_budget,
            **({"slower_than_float": True} if self.slower_than_float else {}),
            "p50_ms": self.latency["p50_ms"] if self.latency else None,
            "size_bytes": self.file.stat().st_size,
            "seconds": round(self.seconds, 2),
        }


def _try(fmt, precision: str, recipe: dict, fp32: Path, out: Path, ctx) -> Candidate:
    start = time.perf_counter()
    settings = fmt.quantize(fp32, out, ctx.profile, precision, ctx.calibration, recipe)
    layout = fmt.layout(ctx.profile)
    # A candidate the runtime cannot load or run is a rejected candidate, not a failed build.
    with mapped(BuildError, f"the runtime cannot load or run this {fmt.name}-{precision} candidate"):
        validation, accuracy, session = validate_artifact(fmt.name, precision, out, layout, ctx.profile, ctx.host,
                                                          ctx.refs, ctx.budget)
    candidate = Candidate(recipe, settings, out, validation, accuracy, session, 0.0)
    if not candidate.within_budget:
        candidate.session = None  # only contenders are timed
    candidate.seconds = time.perf_counter() - start
    return candidate


def _best(candidates: list[Candidate], fmt, fp32: Path, ctx) -> Candidate:
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
    if not within:  # the closest miss: its figures tell the user how far off the budget is
        return max((c for c in candidates if not c.slower_than_float), key=lambda c: (c.validation.passed, c.score))
    if not all(c.validation.host_matches_target for c in within):
        return max(within, key=lambda c: c.score)
    fastest = min(within, key=lambda c: c.latency["p50_ms"])
    return max((c for c in within if not clearly_faster(fastest.latency, c.latency)), key=lambda c: c.score)


@dataclass(frozen=True)
class SearchContext:
    profile: object
    host: object
    refs: References
    calibration: dict
    budget: Budget


def search(fmt, precision: str, fp32: Path, out: Path, ctx: SearchContext) -> tuple[Candidate, list[dict]]:
    """Quantize `fp32` to `precision` with each recipe (and mixed precision if needed);
    leave the chosen candidate at `out`. Returns it and the trail of every candidate."""
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
    mixed_possible = (is_calibrated(precision) and supports(fmt, MIXED_PRECISION)
                      and ctx.refs.evaluation is not None)
    if mixed_possible and not any(c.within_budget for c in tried):
        base = max(tried, key=lambda c: c.score)
        try:
            ranked = fmt.sensitive_layers(fp32, base.file, ctx.calibration, ctx.profile)
        except Exception as exc:  # the libraries' own debugging tools: no ranking, no mixed precision
            errors.append(f"ranking layers for mixed precision failed: {root_cause(exc)}")
            ranked = []
        for count in MIXED_PRECISION_STEPS:  # more float layers are only slower: stop at the first that holds
            if count > len(ranked) * MAX_FLOAT_SHARE:
                break
            found = attempt({**base.recipe, "float_layers": [*base.recipe.get("float_layers", ()), *ranked[:count]]})
            if found is not None and found.within_budget:
                break
    if mixed_possible and not any(c.within_budget for c in tried):
        # The preset, and the recipe that came closest with the whole graph quantized: the
        # best one for the early layers need not be the best once they are float.
        bases = list({id(c): c for c in (plain[0], max(plain, key=lambda c: c.score))}.values())
        for share in PREFIX_SHARES:  # a larger prefix is only slower: stop at the first that holds
            found = [attempt({**c.recipe, "float_prefix": share}) for c in bases]
            if any(c is not None and c.within_budget for c in found):
                break
    chosen = _best(tried, fmt, fp32, ctx)
    trail = [dict(c.trail(), chosen=c is chosen) for c in tried] + [{"error": e} for e in errors]
    move_artifact(fmt, chosen.file, out)
    chosen.file = out
    for c in tried:
        if c is not chosen:
            remove_artifact(fmt, c.file)
    return chosen, trail
