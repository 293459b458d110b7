"""Tier timeliness on the fan-out path, with a fake clock: the hub, its delay lines,
and connections on an in-memory sink."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from football_realtime.brokers.base import PublishedEvent
from football_realtime.core.events import EventType, SubscriptionType
from football_realtime.core.permissions import TierPolicy
from football_realtime.core.subscriptions import SubscriptionFilter
from football_realtime.service.hub import Hub
from football_realtime.service.timed_views import TimedViews
from football_realtime.service.views import TierViews
from football_realtime.stats import ServiceStats

from .memory_sink import connection, published

MATCHES = SubscriptionType.MATCHES
ODDS = SubscriptionType.ODDS
ALL = SubscriptionFilter()

TIERS = {
    "free": {
        "delay_seconds": {"matches": 30},
        "min_interval_seconds": {"odds_updated": 10},
        "hidden_fields": {"odds_updated": ["margin"]},
    },
    "premium": {},
    "pro": {"hidden_fields": {"odds_updated": ["margin"]}},
}


class FakeTimers:
    def __init__(self) -> None:
        self.now = 1000.0
        self.pending: list[tuple[float, int, Callable[[], None], list[bool]]] = []
        self._n = 0

    def clock(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Any:
        self._n += 1
        cancelled = [False]
        self.pending.append((when, self._n, callback, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled[0] = True

        return Handle()

    def advance(self, to: float) -> None:
        while True:
            due = sorted(p for p in self.pending if p[0] <= to and not p[3][0])
            if not due:
                break
            first = due[0]
            self.pending.remove(first)
            self.now = max(self.now, first[0])
            first[2]()
        self.now = to
        self.pending = [p for p in self.pending if not p[3][0]]

    def armed(self) -> int:
        return sum(1 for p in self.pending if not p[3][0])


def setup() -> tuple[Hub, TimedViews, FakeTimers]:
    policy = TierPolicy.from_config(TIERS, "free")
    timers = FakeTimers()
    timing = TimedViews(policy, timers, clock=timers.clock)
    hub = Hub(
        ServiceStats(),
        max_subscriptions=10,
        max_rooms=5,
        render_view=TierViews(policy).render,
        timing=timing,
    )
    return hub, timing, timers


def at(ev: PublishedEvent, t: float) -> PublishedEvent:
    return dataclasses.replace(ev, published_at=t)


def goal(offset: int, t: float, match_id: int = 1) -> PublishedEvent:
    return at(
        published(
            EventType.MATCH_SCORE_CHANGED, offset, match_id=match_id, home_score=1, away_score=0
        ),
        t,
    )


def odds(offset: int, t: float, match_id: int = 1, home: float = 2.0) -> PublishedEvent:
    return at(
        published(
            EventType.ODDS_UPDATED,
            offset,
            match_id=match_id,
            bookmaker="b1",
            home_odds=home,
            margin=0.05,
        ),
        t,
    )


def offsets(sink: Any) -> list[int]:
    return [m["offset"] for m in sink.messages() if "offset" in m]


def test_a_delayed_tier_gets_the_goal_at_its_due_time_and_a_paying_one_at_once() -> None:
    hub, timing, timers = setup()
    free, free_sink = connection("f", view="free")
    paid, paid_sink = connection("p", view=None)
    for c in (free, paid):
        hub.add(c)
        hub.subscribe(c, MATCHES, ALL)
    hub.deliver(goal(1, timers.now))
    assert offsets(paid_sink) == [1] and offsets(free_sink) == []
    assert timing.held() == 1 and timers.armed() == 1  # one timer for the view, not per conn
    timers.advance(timers.now + 29.9)
    assert offsets(free_sink) == []
    timers.advance(timers.now + 0.1)
    assert offsets(free_sink) == [1]
    assert timing.held() == 0 and timers.armed() == 0


def test_the_delay_counts_from_publishing_not_from_arrival() -> None:
    hub, _, timers = setup()
    free, sink = connection("f", view="free")
    hub.add(free)
    hub.subscribe(free, MATCHES, ALL)
    hub.deliver(goal(1, timers.now - 25))  # reached this instance late
    timers.advance(timers.now + 5)
    assert offsets(sink) == [1]


def test_one_timer_per_view_and_stream_however_many_connections() -> None:
    hub, _, timers = setup()
    sinks = []
    for i in range(50):
        c, s = connection(f"f{i}", view="free")
        hub.add(c)
        hub.subscribe(c, MATCHES, ALL)
        sinks.append(s)
    for o in range(1, 4):
        hub.deliver(goal(o, timers.now + o))
    assert timers.armed() == 1
    timers.advance(timers.now + 40)
    assert all(offsets(s) == [1, 2, 3] for s in sinks)


def test_a_connection_that_subscribes_while_a_goal_waits_gets_it_when_due() -> None:
    hub, _, timers = setup()
    hub.deliver(goal(1, timers.now))  # nobody of the free tier is connected yet
    late, sink = connection("late", view="free")
    hub.add(late)
    hub.subscribe(late, MATCHES, ALL)
    timers.advance(timers.now + 30)
    assert offsets(sink) == [1]


def test_a_closed_or_unsubscribed_connection_gets_nothing_on_release() -> None:
    hub, _, timers = setup()
    gone, gone_sink = connection("gone", view="free")
    left, left_sink = connection("left", view="free")
    for c in (gone, left):
        hub.add(c)
        hub.subscribe(c, MATCHES, ALL)
    hub.deliver(goal(1, timers.now))
    hub.remove(gone, 1000)
    hub.unsubscribe(left, None, MATCHES)
    timers.advance(timers.now + 31)
    assert offsets(gone_sink) == [] and offsets(left_sink) == []


def test_thinned_odds_keep_the_latest_per_key_and_hide_fields_as_the_view_says() -> None:
    hub, timing, timers = setup()
    free, sink = connection("f", view="free")
    pro, pro_sink = connection("p", view="pro")
    for c in (free, pro):
        hub.add(c)
        hub.subscribe(c, ODDS, ALL)
    t0 = timers.now
    hub.deliver(odds(1, t0, home=2.0))
    timers.advance(t0 + 1)
    hub.deliver(odds(2, t0 + 1, home=2.1))
    timers.advance(t0 + 2)
    hub.deliver(odds(3, t0 + 2, home=2.2))
    assert offsets(pro_sink) == [1, 2, 3]  # a view without timeliness: untouched
    assert offsets(sink) == [1]
    timers.advance(t0 + 10)
    got = [m for m in sink.messages() if "offset" in m]
    assert [m["offset"] for m in got] == [1, 3]
    assert got[-1]["data"]["home_odds"] == 2.2 and "margin" not in got[-1]["data"]
    assert timing.thinned() == 1


def test_a_direct_send_of_a_delayed_type_waits_for_the_delay() -> None:
    hub, _, timers = setup()
    free, sink = connection("f", view="free")
    paid, paid_sink = connection("p", view=None)
    for c in (free, paid):
        hub.add(c)
    direct = dataclasses.replace(goal(0, 0.0), offset=0)
    assert hub.send_event_many(["f", "p"], direct) == 2
    assert len(paid_sink.messages()) == 1 and sink.messages() == []
    timers.advance(timers.now + 30)
    assert len(sink.messages()) == 1


def test_a_connection_held_for_its_replay_gets_released_events_in_its_backlog() -> None:
    hub, _, timers = setup()
    free, sink = connection("f", view="free")
    hub.add(free)
    hub.subscribe(free, MATCHES, ALL)
    free.held = []
    hub.deliver(goal(1, timers.now))
    assert free.held == []  # not before its due time, even into a replay's backlog
    timers.advance(timers.now + 30)
    assert [ev.offset for ev in free.held] == [1]
    assert sink.messages() == []


def test_the_visible_top_stops_before_the_first_waiting_event() -> None:
    hub, timing, timers = setup()
    assert timing.visible_top("free", MATCHES, 10, hub.tops) == 10
    hub.deliver(at(published(EventType.MATCH_STARTED, 7, match_id=2), timers.now - 60))
    hub.deliver(goal(8, timers.now))
    hub.deliver(at(published(EventType.MATCH_STARTED, 9, match_id=3), timers.now))
    assert timing.visible_top("free", MATCHES, 12, hub.tops) == 7
    assert timing.visible_top("pro", MATCHES, 12, hub.tops) == 12
    assert timing.visible_top(None, MATCHES, 12, hub.tops) == 12
    timers.advance(timers.now + 30)
    # nothing waits: what this instance received (the rest is on its way into the line)
    assert timing.visible_top("free", MATCHES, 12, hub.tops) == 9


def test_a_tier_change_moves_the_connection_between_live_and_delayed() -> None:
    hub, _, timers = setup()
    conn, sink = connection("c", view=None)
    hub.add(conn)
    hub.subscribe(conn, MATCHES, ALL)
    hub.deliver(goal(1, timers.now))
    assert offsets(sink) == [1]
    hub.set_view(conn, "free")  # e.g. a refreshed token with the free tier
    assert len(hub.view_index["free"]) == 1
    hub.deliver(goal(2, timers.now))
    assert offsets(sink) == [1]
    timers.advance(timers.now + 30)
    assert offsets(sink) == [1, 2]
    hub.set_view(conn, None)
    assert len(hub.view_index["free"]) == 0
    hub.deliver(goal(3, timers.now))
    assert offsets(sink) == [1, 2, 3]


def test_a_release_walks_only_its_view_s_subscriptions() -> None:
    hub, _, timers = setup()
    for i in range(20):
        c, _ = connection(f"p{i}", view=None)
        hub.add(c)
        hub.subscribe(c, MATCHES, ALL)
    free, sink = connection("f", view="free")
    hub.add(free)
    hub.subscribe(free, MATCHES, ALL)
    assert len(hub.index) == 21 and len(hub.view_index["free"]) == 1
    hub.deliver(goal(1, timers.now))
    timers.advance(timers.now + 30)
    assert offsets(sink) == [1]
    hub.remove(free, 1000)
    assert len(hub.view_index["free"]) == 0


def test_an_upgrade_out_of_a_delayed_tier_gets_what_waited_at_once() -> None:
    hub, _, timers = setup()
    conn, sink = connection("c", view="free")
    hub.add(conn)
    hub.subscribe(conn, MATCHES, ALL)
    hub.deliver(goal(1, timers.now))
    hub.deliver(goal(2, timers.now, match_id=2))
    assert offsets(sink) == []
    hub.set_view(conn, None)  # a refreshed token with a paying tier
    assert offsets(sink) == [1, 2]
    hub.deliver(goal(3, timers.now))
    timers.advance(timers.now + 30)
    assert offsets(sink) == [1, 2, 3]
