"""The stats histogram against PromQL's histogram_quantile (tests/scrape.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from football_realtime.stats import LATENCY_BUCKETS, SIZE_BUCKETS, Histogram

from .scrape import histogram_quantile

values = st.lists(
    st.floats(min_value=0, max_value=20, allow_nan=False, allow_infinity=False), max_size=200
)


@settings(max_examples=200, deadline=None)
@given(values, st.sampled_from([0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0]))
def test_quantile_matches_histogram_quantile(obs: list[float], q: float) -> None:
    h = Histogram(LATENCY_BUCKETS)
    for v in obs:
        h.observe(v)
    assert h.count == len(obs)
    assert h.sum == pytest.approx(sum(obs))
    cum = h.cumulative()
    assert cum[-1][1] == len(obs)
    # bucket semantics: le is inclusive
    for le, n in cum:
        assert n == sum(1 for v in obs if v <= le)
    expected = histogram_quantile(q, cum)
    got = h.quantile(q)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_merged_and_summary() -> None:
    a = Histogram(SIZE_BUCKETS)
    b = Histogram(SIZE_BUCKETS)
    for v in (100, 200, 300):
        a.observe(v)
    b.observe(5000)
    m = Histogram.merged(SIZE_BUCKETS, (a, b))
    assert m.count == 4 and m.sum == 5600
    assert m.cumulative()[-1] == (float("inf"), 4)
    s = m.summary()
    assert s["count"] == 4 and s["mean"] == 1400.0
    assert s["p50"] == pytest.approx(histogram_quantile(0.5, m.cumulative()))
    assert Histogram(SIZE_BUCKETS).summary() == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
    }
    # beyond the last bucket: the highest finite bound, as Prometheus answers
    big = Histogram((1.0, 2.0))
    big.observe(50.0)
    assert big.quantile(0.99) == 2.0 == histogram_quantile(0.99, big.cumulative())
