"""The search's float-prefix step on stand-in candidates: which shares it tries, in which order."""

from edgepack.islands import Islands
from edgepack.search import PREFIX_SHARES, _bisect_prefix


class _Tried:
    def __init__(self, recipe: dict, islands: Islands, error: float, floor: float):
        self.recipe, self.islands, self._error, self._floor = recipe, islands, error, floor

    def error(self) -> float:
        return self._error

    def within(self) -> bool:
        return self._error <= self._floor


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
