"""Reconnect backoff policy (pure)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from football_realtime.client.backoff import Backoff

delays = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@given(
    lo=delays,
    extra=delays,
    attempt=st.integers(min_value=1, max_value=10_000),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_delay_always_between_min_and_max(lo: float, extra: float, attempt: int, r: float) -> None:
    b = Backoff(lo, lo + extra)
    d = b.delay(attempt, lambda: r)
    assert b.min_delay <= d <= b.max_delay
    assert d <= b.upper_bound(attempt)


@given(lo=st.floats(min_value=0.001, max_value=10.0), extra=delays)
def test_upper_bound_doubles_until_it_reaches_max(lo: float, extra: float) -> None:
    b = Backoff(lo, lo + extra)
    bounds = [b.upper_bound(n) for n in range(1, 80)]
    assert bounds == sorted(bounds)
    assert bounds[0] == min(b.max_delay, 2 * lo)
    assert bounds[-1] == b.max_delay
    for n in range(1, 79):
        if bounds[n] < b.max_delay:
            assert math.isclose(bounds[n] - lo, 2 * (bounds[n - 1] - lo))


def test_defaults_match_the_documented_policy() -> None:
    b = Backoff()
    assert (b.min_delay, b.max_delay) == (0.5, 5.0)
    assert b.upper_bound(1) == 1.0
    assert b.upper_bound(2) == 1.5
    assert b.upper_bound(3) == 2.5
    assert b.upper_bound(4) == 4.5
    assert b.upper_bound(5) == 5.0  # 0.5 + 8 capped: back within 5 s of the service
    assert b.delay(5, lambda: 0.0) == 0.5


def test_full_jitter_spreads_clients_out() -> None:
    b = Backoff(0.5, 20.0)
    rng = random.Random(7)
    samples = [b.delay(8, rng.random) for _ in range(2000)]
    assert min(samples) < 2.0 and max(samples) > 18.0
    # Uniform over [0.5, 20]: the mean sits near the middle.
    assert 9.0 < sum(samples) / len(samples) < 11.5


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(-1.0, 1.0)
    with pytest.raises(ValueError):
        Backoff().upper_bound(0)
