"""The proxy benchmark's interval on teletap / mitmdump: pairs stay pairs, and the point estimate lies inside."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_proxy import ratio_interval

rates = st.floats(min_value=50, max_value=5000, allow_nan=False)
pairs = st.lists(st.tuples(rates, rates), min_size=1, max_size=20)


@given(pairs)
def test_interval_stays_within_the_ratios_of_the_pairs(rounds: list[tuple[float, float]]) -> None:
    values, baseline = [v for v, _ in rounds], [b for _, b in rounds]
    low, high = ratio_interval(values, baseline, resamples=400)
    pair_ratios = [v / b for v, b in rounds]
    # A resample of whole pairs is a weighted mean of pair ratios: never outside their range. Resampling the
    # two sides separately (which would forget what a round's neighbours did to both) breaks this.
    assert min(pair_ratios) - 1e-9 <= low <= high <= max(pair_ratios) + 1e-9


def test_a_constant_ratio_has_no_spread() -> None:
    baseline = [600.0, 520.0, 710.0, 480.0, 655.0]
    low, high = ratio_interval([0.9 * b for b in baseline], baseline)
    assert low == pytest.approx(0.9) and high == pytest.approx(0.9)


def test_noisy_pairs_give_an_interval_around_the_estimate() -> None:
    values = [500.0, 560.0, 480.0, 600.0, 610.0, 590.0, 530.0, 575.0]
    baseline = [600.0, 580.0, 560.0, 620.0, 640.0, 600.0, 610.0, 590.0]
    low, high = ratio_interval(values, baseline)
    estimate = sum(values) / sum(baseline)
    assert low < estimate < high
    assert ratio_interval(values, baseline) == (low, high)  # seeded: the same rounds give the same interval


def test_rounds_must_pair_up_and_measure_something() -> None:
    with pytest.raises(ValueError, match="same number of rounds"):
        ratio_interval([500.0, 510.0], [600.0])
    with pytest.raises(ValueError, match="at least one round"):
        ratio_interval([], [])
    with pytest.raises(ValueError, match="at least one round"):
        ratio_interval([500.0], [0.0])
    # A round in which mitmdump served nothing is left out, not divided by.
    assert ratio_interval([500.0, 450.0], [0.0, 500.0]) == (0.9, 0.9)
