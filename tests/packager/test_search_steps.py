"""The search's float-island steps on stand-in candidates (which shares and layer counts it
tries, in which order), and the first look that drops a candidate early."""

import numpy as np

from edgepack.islands import Islands
from edgepack.search import PREFIX_SHARES, SCREEN_MIN_GROUPS, Judged, _bisect_prefix, _rank_float, _reachable
from edgepack_runtime.manifest import Accuracy, TaskMetric


class _Tried:
    def __init__(self, recipe: dict, islands: Islands, error: float, floor: float):
        self.recipe, self.islands, self._error, self._floor = recipe, islands, error, floor

    def error(self) -> float:
        return self._error

    def within(self) -> bool:
        return self._error <= self._floor

    @property
    def holds_with_margin(self) -> bool:
        return self._error <= self._floor / 2


def _run(bases: dict[str, float], error_at, floor: float = 0.2) -> list[tuple[str, float]]:
    """Bisect from bases {name: whole-graph error}; error_at(name, share) is a candidate's error."""
    tried = []

    def attempt(recipe, islands):
        assert islands.tail  # the base's scope is kept: the prefix is added to it
        tried.append((recipe["name"], islands.prefix))
        return _Tried(recipe, islands, error_at(recipe["name"], islands.prefix), floor)

    _bisect_prefix([_Tried({"name": n}, Islands(tail=True), e, floor) for n, e in bases.items()], attempt)
    return tried


def test_the_smallest_share_within_budget_is_found_from_the_closer_base():
    # Error falls with the share; the preset gets within budget (0.2) from 20 % on.
    error = lambda name, share: (0.5 if name == "other" else 0.0) + 1.0 - 4 * share  # noqa: E731
    tried = _run({"preset": 1.0, "other": 0.9}, error)
    assert tried[:2] == [("preset", 0.25), ("other", 0.25)]
    assert all(name == "preset" for name, _ in tried[2:]) and len(tried) <= 4
    within = [share for name, share in tried if error(name, share) <= 0.2]
    assert min(within) == 0.2 and PREFIX_SHARES[-1] == 0.25


def test_no_smaller_share_is_tried_when_the_largest_misses():
    assert _run({"preset": 1.0}, lambda name, share: 0.9) == [("preset", 0.25)]


def _ranked(error_at, counts=(1, 2, 4, 8, 16), floor: float = 0.2) -> list[int]:
    """The ranked-layer step from a base; error_at(n) is the error with the n most sensitive
    layers float (within budget at `floor`, with margin at half of it). The counts tried."""
    tried = []
    ranked = [(f"layer{i}",) for i in range(64)]

    def attempt(recipe, islands):
        tried.append(len(islands.ranked))
        assert islands.ranked == tuple(ranked[:len(islands.ranked)])  # the most sensitive first
        return _Tried(recipe, islands, error_at(len(islands.ranked)), floor)

    _rank_float(list(counts), ranked, _Tried({"name": "base"}, Islands(), 1.0, floor), attempt)
    return tried


def test_one_ranked_layer_that_holds_with_margin_ends_the_step():
    assert _ranked(lambda n: 0.05) == [1]


def test_the_fewest_ranked_layers_past_a_tie_are_found_by_bisection():
    """U^2-Net-p: 1 and 2 layers tied (the walk stopped there), 4 held with margin."""
    error = {1: 0.3, 2: 0.3, 4: 0.08, 8: 0.05, 16: 0.04}
    tried = _ranked(error.get)
    assert tried[:2] == [1, 16] and len(tried) <= 4
    assert min(n for n in tried if error[n] <= 0.1) == 4


def test_no_fewer_ranked_layers_are_tried_when_the_most_miss():
    assert _ranked(lambda n: 0.5) == [1, 16]


def test_within_budget_without_margin_is_enough_when_the_most_layers_have_no_margin():
    error = {1: 0.5, 2: 0.3, 4: 0.18, 8: 0.15, 16: 0.12}
    tried = _ranked(error.get)
    assert min(n for n in tried if error[n] <= 0.2) == 4


def _look(value: float, high: float, groups: int, floor=85.0) -> Judged:
    metric = TaskMetric("top1_agreement", value, value - 10, high, samples=groups, floor=floor, groups=groups)
    return Judged(Accuracy(samples=groups, indicative=False, cosine=0.9, metrics=(metric,)), np.zeros(groups))


def test_a_first_look_drops_a_candidate_only_when_its_interval_cannot_reach_the_floor():
    assert not _reachable(_look(60.0, 80.0, groups=8))  # the high end is below 85
    assert _reachable(_look(80.0, 90.0, groups=8))  # it might still get there
    assert _reachable(_look(60.0, 80.0, groups=SCREEN_MIN_GROUPS - 1))  # too few groups to say
    assert _reachable(_look(60.0, 80.0, groups=8, floor=None))  # a reported-only figure drops nothing


def test_the_status_line_says_which_candidate_is_under_way_and_what_the_recipes_should_still_take(capsys):
    import logging

    from edgepack import cli
    from edgepack.search import STATUS_LINE_ONLY, _pace

    class Done:
        seconds = 30.0

    assert _pace(1, 6, []) == " of 6"
    assert _pace(3, 6, [Done(), Done()]) == " of 6, about 2:00 left for the recipes"  # 4 more at 30 s
    assert _pace(7, 6, [Done()] * 6) == " (float islands)"

    shown = []

    class Status:
        def update(self, *, text):  # rich's Spinner.update
            shown.append(text)

    lines = cli._LogLines(verbose=True)
    lines.status, lines.started = Status(), 0.0
    record = logging.LogRecord("edgepack.search", logging.INFO, __file__, 1, "onnx-int8 candidate 3 of 6", None, None)
    record.__dict__.update(STATUS_LINE_ONLY)
    lines.emit(record)
    assert "onnx-int8 candidate 3 of 6" in shown[-1]
    assert "candidate" not in capsys.readouterr().err  # -v prints each candidate's result, not this
