"""The free viewer's delayed REST state, with the clock passed in."""

from __future__ import annotations

from typing import Any

from football_realtime.demo.delayed_state import DelayedState


def snap(t: float) -> dict[str, Any]:
    return {"taken": t}


def test_the_newest_sample_at_least_the_delay_old_is_the_answer() -> None:
    d = DelayedState(delay=30, every=1)
    assert d.as_of(0) is None
    for t in range(100):
        d.record(float(t), lambda t=t: snap(float(t)))
        d.record(t + 0.5, lambda: snap(-1))  # within `every`: not sampled
    assert d.as_of(99.0) == {"taken": 69.0}
    assert d.as_of(99.5) == {"taken": 69.0}
    assert d.as_of(100.0) == {"taken": 70.0}
    # bounded: what is older than the one the answer needs is gone
    assert len(d) <= 32


def test_before_the_delay_has_passed_the_oldest_sample_stands_in() -> None:
    d = DelayedState(delay=30, every=1)
    for t in range(5):
        d.record(float(t), lambda t=t: snap(float(t)))
    assert d.as_of(5.0) == {"taken": 0.0}
