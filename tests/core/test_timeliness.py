"""Tier timeliness rules and the delay line, with the clock passed in."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from football_realtime.core.conflation import CONFLATED_EVENT_TYPES
from football_realtime.core.events import EventType
from football_realtime.core.permissions import TierPolicy
from football_realtime.core.timeliness import DelayLine, Timeliness, visible_until

GOAL = EventType.MATCH_SCORE_CHANGED
STATUS = EventType.MATCH_STATUS_CHANGED
STARTED = EventType.MATCH_STARTED
ODDS = EventType.ODDS_UPDATED


def test_stream_keys_expand_and_a_named_type_overrides_its_stream_in_any_order() -> None:
    t = Timeliness.from_config("free", {"match_score_changed": 5, "matches": 30}, None)
    assert t.delay(GOAL) == 5
    assert t.delay(STATUS) == 30
    assert t.delay(EventType.PREDICTION_CREATED) == 0
    # zero switches a type of a delayed stream back to live
    t = Timeliness.from_config("free", {"matches": 30, "match_started": 0}, None)
    assert t.delay(STARTED) == 0 and t.delay(GOAL) == 30


def test_a_stream_named_for_thinning_thins_only_what_may_be_thinned() -> None:
    t = Timeliness.from_config("free", None, {"odds": 10})
    assert set(t.min_intervals) == {ODDS}
    assert set(t.min_intervals) <= CONFLATED_EVENT_TYPES


@pytest.mark.parametrize(
    ("delays", "intervals", "message"),
    [
        (None, {"match_score_changed": 10}, "never dropped"),
        (None, {"prediction_created": 1}, "never dropped"),
        ({"goalz": 1}, None, "unknown event type or stream 'goalz'"),
        ({"matches": -1}, None, "within 0..86400"),
        ({"matches": "30"}, None, "must be a number"),
        ({"matches": True}, None, "must be a number"),
        ([30], None, "must be an object"),
        ({"connection_status": 1}, None, "not a published type"),
    ],
)
def test_bad_rules_are_refused_naming_the_entry(delays: Any, intervals: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Timeliness.from_config("free", delays, intervals)


def test_the_policy_reads_the_rules_and_a_timed_tier_is_not_unrestricted() -> None:
    policy = TierPolicy.from_config(
        {"free": {"delay_seconds": {"matches": 30}}, "premium": {}}, "free"
    )
    free = policy.tiers["free"]
    assert free.timeliness.delay(GOAL) == 30
    assert not free.unrestricted and policy.tiers["premium"].unrestricted
    assert policy.describe(free)["delay_seconds"]["match_score_changed"] == 30
    with pytest.raises(ValueError, match="never dropped"):
        TierPolicy.from_config({"free": {"min_interval_seconds": {"matches": 1}}}, "free")


def line(delays: dict[str, float] | None = None, intervals: dict[str, float] | None = None) -> Any:
    return DelayLine(Timeliness.from_config("t", delays, intervals))


def test_a_delayed_event_leaves_at_its_due_time_and_later_ones_wait_behind_it() -> None:
    dl = line({"match_score_changed": 30})
    assert dl.push("goal", 1, GOAL, {"match_id": 1}, published_at=100.0, now=100.2)
    # not delayed itself, but it may not overtake the goal (clients go by offset)
    assert dl.push("kickoff", 2, STARTED, {"match_id": 2}, published_at=101.0, now=101.0)
    assert dl.held == 2 and dl.first_waiting() == 1 and dl.next_due() == 130.0
    assert list(dl.pop_due(129.99)) == []
    assert list(dl.pop_due(130.0)) == ["goal", "kickoff"]
    assert dl.held == 0 and dl.first_waiting() is None and dl.next_due() is None


def test_an_event_with_nothing_before_it_and_no_delay_goes_at_once() -> None:
    dl = line({"match_score_changed": 30})
    assert not dl.push("kickoff", 1, STARTED, {"match_id": 2}, published_at=5.0, now=5.0)
    assert dl.held == 0
    # a goal published long enough ago is due at once too
    assert not dl.push("old goal", 2, GOAL, {"match_id": 2}, published_at=5.0, now=40.0)


def test_thinning_first_goes_at_once_then_the_latest_of_its_key_per_window() -> None:
    dl = line(None, {"odds_updated": 10})
    a = {"match_id": 1, "bookmaker": "b1"}
    b = {"match_id": 2, "bookmaker": "b1"}
    assert not dl.push("a1", 1, ODDS, a, published_at=0.0, now=0.0)  # leading edge
    assert dl.push("a2", 2, ODDS, a, published_at=1.0, now=1.0)
    assert dl.push("a3", 3, ODDS, a, published_at=2.0, now=2.0)  # replaces a2
    assert dl.thinned == 1 and dl.held == 1
    # another key: not thinned, but in offset order behind a3
    assert dl.push("b1", 4, ODDS, b, published_at=3.0, now=3.0)
    assert list(dl.pop_due(9.9)) == []
    assert list(dl.pop_due(10.0)) == ["a3", "b1"]
    # a's next window runs from when a3 left
    assert dl.push("a4", 5, ODDS, a, published_at=11.0, now=11.0)
    assert dl.next_due() == 20.0
    assert dl.push("x", 6, ODDS, {"match_id": 3}, published_at=11, now=11)  # behind a4
    assert list(dl.pop_due(20.0)) == ["a4", "x"]
    # after a quiet window the key goes at once again
    assert not dl.push("a5", 7, ODDS, a, published_at=40.0, now=40.0)


def test_visible_until_stops_before_the_first_event_still_held_back() -> None:
    rules = Timeliness.from_config("t", {"match_score_changed": 30}, None)
    history = [(1, STARTED, 0.0), (2, GOAL, 10.0), (3, GOAL, 20.0), (4, STARTED, 21.0)]
    assert visible_until(rules, history, now=35.0) == 1
    assert visible_until(rules, history, now=45.0) == 2
    assert visible_until(rules, history, now=50.0) is None
    assert visible_until(Timeliness(), history, now=0.0) is None


events = st.lists(
    st.tuples(
        st.sampled_from([GOAL, STARTED, ODDS]),
        st.integers(0, 3),  # match
        st.floats(0, 5),  # seconds since the previous publish
        st.floats(0, 2),  # transit to this instance
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(events, st.floats(0.5, 30), st.floats(0.5, 20))
def test_the_line_keeps_offset_order_loses_no_goal_and_releases_nothing_early(
    evs: list[tuple[EventType, int, float, float]], delay: float, interval: float
) -> None:
    dl = line({"match_score_changed": delay}, {"odds_updated": interval})
    out: list[tuple[int, float]] = []
    published: dict[int, tuple[EventType, float]] = {}
    keys: dict[int, int] = {}
    t = 0.0
    now = 0.0
    for offset, (et, match, gap, transit) in enumerate(evs, start=1):
        t += gap
        # arrivals are in offset order; the clock only moves forward
        now = max(now, t + transit)
        out.extend((o, now) for o in dl.pop_due(now))
        published[offset] = (et, t)
        keys[offset] = match
        data = {"match_id": match, "bookmaker": "b"}
        if not dl.push(offset, offset, et, data, published_at=t, now=now):
            out.append((offset, now))
    while dl.held:
        due = dl.next_due()
        assert due is not None
        now = max(now, due)
        out.extend((o, now) for o in dl.pop_due(now))
    offsets = [o for o, _ in out]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    for o, when in out:
        et, pub = published[o]
        if et is GOAL:
            assert when >= pub + delay
    # nothing but odds is ever dropped
    dropped = set(published) - set(offsets)
    assert all(published[o][0] is ODDS for o in dropped)
    assert dl.thinned == len(dropped)
    # a thinned key leaves the line at most once per interval
    last: dict[int, float] = {}
    for o, when in out:
        if published[o][0] is ODDS:
            k = keys[o]
            if k in last:
                assert when >= last[k] + interval - 1e-9
            last[k] = when
