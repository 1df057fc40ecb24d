"""Intervals whose unit is the group: they must hold the truth about 95 % of the time on
clustered data, where counting every sample as independent does not."""

from __future__ import annotations

import numpy as np

from edgepack_runtime.intervals import group_index, mean_interval, ratio_interval, wilson_interval


def _clustered(rng, groups: int, per_group: int, truth: float, spread: float) -> np.ndarray:
    """Hits of `groups` photos with `per_group` views each: each photo has its own rate."""
    rates = np.clip(rng.normal(truth, spread, groups), 0, 1)
    return rng.random((groups, per_group)) < rates[:, None]


def test_group_intervals_hold_where_per_sample_ones_do_not():
    rng = np.random.default_rng(0)
    truth, draws = 0.85, 600
    by_group = by_sample = 0
    for _ in range(draws):
        hits = _clustered(rng, groups=6, per_group=12, truth=truth, spread=0.15)
        low, high = ratio_interval(hits.sum(axis=1), np.full(6, 12))
        by_group += low <= truth <= high
        low, high = wilson_interval(int(hits.sum()), hits.size)
        by_sample += low / 100 <= truth <= high / 100
    assert by_group / draws >= 0.90  # the 95 % interval over 6 photos
    assert by_sample / draws < 0.85  # 72 views counted as independent: too narrow
    assert by_group > by_sample


def test_perfect_groups_are_counted_as_groups():
    low, high = ratio_interval([12] * 6, [12] * 6)  # 72 of 72 views right, from 6 photos
    assert high == 1.0 and 0.4 < low < 0.6  # six photos cannot promise 95 % (Student's t, 5 dof)
    many_low, _ = ratio_interval([1] * 72, [1] * 72)  # 72 separate photos can promise more
    assert many_low > 0.9


def test_one_sample_per_group_is_close_to_plain_wilson():
    hits = np.array([1] * 170 + [0] * 30)
    low, high = ratio_interval(hits, np.ones_like(hits))
    w_low, w_high = wilson_interval(170, 200)
    assert abs(low * 100 - w_low) < 1.0 and abs(high * 100 - w_high) < 1.0


def test_mean_interval_rests_on_group_means():
    values = np.repeat([0.9, 0.99, 0.95, 0.97], 25)
    grouped = mean_interval(values, np.repeat(np.arange(4), 25))
    flat = mean_interval(values)
    assert grouped[0] < flat[0] and grouped[1] > flat[1]  # 4 units, not 100


def test_group_index_numbers_groups_in_order_of_appearance():
    assert group_index(np.array([7, 7, 3, 9, 3]), 5).tolist() == [0, 0, 1, 2, 1]
    assert group_index(None, 3).tolist() == [0, 1, 2]
