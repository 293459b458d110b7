"""The hub's fan-out without sockets: connections on an in-memory sink."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest

from football_realtime.brokers.base import PublishedEvent
from football_realtime.core.close_codes import CloseCode
from football_realtime.core.events import EventType, SubscriptionType
from football_realtime.core.permissions import TierPolicy
from football_realtime.core.protocol import ProtocolError
from football_realtime.core.subscriptions import SubscriptionFilter
from football_realtime.service.connection import Connection, Encoded
from football_realtime.service.hub import Hub
from football_realtime.service.views import TierViews
from football_realtime.stats import ServiceStats

from .memory_sink import connection, published

PREDICTIONS = SubscriptionType.PREDICTIONS
ODDS = SubscriptionType.ODDS
NO_FILTER = SubscriptionFilter()


def make_hub(**kwargs: Any) -> Hub:
    return Hub(ServiceStats(), max_subscriptions=10, max_rooms=5, **kwargs)


def prediction(offset: int, match_id: int = 1, confidence: float = 0.8) -> PublishedEvent:
    return published(
        EventType.PREDICTION_CREATED,
        offset,
        match_id=match_id,
        confidence=confidence,
        league="英超",
        expected_value=0.12,
        strategy="ml_ensemble",
    )


def odds(
    offset: int, match_id: int = 1, bookmaker: str = "b1", home: float = 2.0
) -> PublishedEvent:
    return published(
        EventType.ODDS_UPDATED,
        offset,
        match_id=match_id,
        bookmaker=bookmaker,
        home_odds=home,
        draw_odds=3.2,
        away_odds=3.9,
    )


def test_an_event_matching_several_subscriptions_is_delivered_once() -> None:
    hub = make_hub()
    conn, sink = connection()
    hub.add(conn)
    hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    hub.subscribe(conn, PREDICTIONS, SubscriptionFilter(match_ids=[1]))
    hub.subscribe(conn, None, SubscriptionFilter(event_types=[EventType.PREDICTION_CREATED]))
    assert hub.deliver(prediction(1)) == 1
    assert [m["offset"] for m in sink.messages()] == [1]
    assert hub.stats.messages_sent == 1
    assert hub.stats.delivered_by_type[EventType.PREDICTION_CREATED] == 1


def test_filters_choose_the_recipients_and_the_same_bytes_go_to_each() -> None:
    hub = make_hub()
    a, sink_a = connection("a")
    b, sink_b = connection("b")
    c, sink_c = connection("c")
    for conn in (a, b, c):
        hub.add(conn)
    hub.subscribe(a, PREDICTIONS, SubscriptionFilter(match_ids=[1, 2]))
    hub.subscribe(b, PREDICTIONS, SubscriptionFilter(min_confidence=0.9))
    hub.subscribe(c, PREDICTIONS, SubscriptionFilter(leagues=["英超"]))
    assert hub.deliver(prediction(1, match_id=2, confidence=0.85)) == 2
    assert sink_b.frames == []
    assert sink_a.frames == sink_c.frames  # one serialisation, one frame, shared
    assert sink_a.frames[0] is sink_c.frames[0]


def test_tier_views_render_once_per_view_and_hide_fields() -> None:
    policy = TierPolicy.from_config(
        {
            "free": {
                "event_types": ["prediction_created"],
                "hidden_fields": {"prediction_created": ["expected_value", "strategy"]},
            },
            "premium": {},
        },
        "free",
    )
    views = TierViews(policy)
    calls: list[tuple[int, Hashable]] = []

    def render(ev: PublishedEvent, view: Hashable) -> Encoded | None:
        calls.append((ev.offset, view))
        return views.render(ev, view)

    hub = make_hub(render_view=render)
    free = [connection(f"f{i}", view="free") for i in range(3)]
    paid = [connection(f"p{i}") for i in range(2)]  # unrestricted: no view
    for conn, _ in free + paid:
        hub.add(conn)
        hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    assert hub.deliver(prediction(7)) == 5
    assert calls == [(7, "free")]
    for _, sink in free:
        (msg,) = sink.messages()
        assert "expected_value" not in msg["data"] and "strategy" not in msg["data"]
    for _, sink in paid:
        (msg,) = sink.messages()
        assert msg["data"]["strategy"] == "ml_ensemble"


def test_a_view_that_may_not_receive_an_event_gets_nothing() -> None:
    hub = make_hub(render_view=lambda ev, view: None)
    conn, sink = connection(view="free")
    hub.add(conn)
    hub.subscribe(conn, ODDS, NO_FILTER)
    assert hub.deliver(odds(1)) == 0
    assert sink.frames == []


def test_targeted_sends_go_through_the_views_too() -> None:
    hub = make_hub(render_view=lambda ev, view: None)
    restricted, r_sink = connection("r", user_id="u1", view="free")
    open_, o_sink = connection("o", user_id="u1")
    hub.add(restricted)
    hub.add(open_)
    assert hub.send_event_many(hub.user_connections["u1"], prediction(0)) == 1
    assert r_sink.frames == [] and len(o_sink.frames) == 1


def test_odds_are_conflated_while_a_socket_is_behind_and_goals_never() -> None:
    hub = make_hub()
    conn, sink = connection()
    hub.add(conn)
    hub.subscribe(conn, ODDS, NO_FILTER)
    hub.subscribe(conn, SubscriptionType.MATCHES, NO_FILTER)
    conn.writable_changed(False)  # the socket stopped taking data
    hub.deliver(odds(1, home=2.0))
    hub.deliver(odds(2, home=2.1))
    hub.deliver(odds(3, bookmaker="b2", home=1.9))
    for off in (1, 2):
        hub.deliver(published(EventType.MATCH_SCORE_CHANGED, off, match_id=1, home_score=off))
    hub.deliver(odds(4, home=2.2))
    assert sink.frames == []
    conn.writable_changed(True)
    got = [(m["event_type"], m.get("offset"), m.get("conflated")) for m in sink.messages()]
    # b1's odds: one message, the newest (offset 4) in its own place in the queue,
    # replacing the two queued before it; b2's odds and both goals untouched, in order.
    assert got == [
        ("odds_updated", 3, None),
        ("match_score_changed", 1, None),
        ("match_score_changed", 2, None),
        ("odds_updated", 4, 2),
    ]
    assert hub.stats.conflated >= 1


def test_a_batching_connection_gets_what_queued_as_one_array() -> None:
    hub = make_hub()
    conn, sink = connection(batch=True)
    hub.add(conn)
    hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    conn.writable_changed(False)
    for off in (1, 2, 3):
        hub.deliver(prediction(off, match_id=off))
    conn.writable_changed(True)
    (batch,) = sink.messages()
    assert [m["offset"] for m in batch] == [1, 2, 3]
    hub.deliver(prediction(4))  # the socket keeps up again: one message, one frame
    assert sink.messages()[-1]["offset"] == 4


def test_a_slow_consumer_is_cut_with_4001_and_others_are_unaffected() -> None:
    overflowed: list[Connection] = []
    hub = make_hub()
    slow, slow_sink = connection("slow", buffer_limit=600)
    slow.on_overflow = overflowed.append
    fast, fast_sink = connection("fast")
    for conn in (slow, fast):
        hub.add(conn)
        hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    slow.writable_changed(False)
    for off in range(1, 11):
        hub.deliver(prediction(off))
    assert overflowed == [slow]
    assert slow_sink.closed is not None and slow_sink.closed[0] == CloseCode.SLOW_CONSUMER
    assert slow_sink.closed[2] is True  # aborted: the peer is not reading
    assert [m["offset"] for m in fast_sink.messages()] == list(range(1, 11))


def test_events_are_held_during_a_replay_and_not_sent() -> None:
    hub = make_hub()
    conn, sink = connection()
    hub.add(conn)
    hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    conn.held = []
    hub.deliver(prediction(1))
    assert sink.frames == [] and [ev.offset for ev in conn.held] == [1]


def test_membership_is_reported_and_removal_forgets_everything() -> None:
    seen: list[tuple[str, bool]] = []
    hub = make_hub(on_membership=lambda conn, added: seen.append((conn.id, added)))
    conn, _ = connection(user_id="u1")
    hub.add(conn)
    hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    hub.join(conn, "match:1")
    hub.remove(conn, CloseCode.NORMAL)
    assert seen == [("c1", True), ("c1", False)]
    assert hub.connections == {} and hub.user_connections == {} and hub.rooms == {}
    assert len(hub.index) == 0
    assert hub.deliver(prediction(1)) == 0
    assert hub.stats.closed_by_code[CloseCode.NORMAL] == 1


def test_subscription_limit_and_unknown_unsubscribe_are_protocol_errors() -> None:
    hub = Hub(ServiceStats(), max_subscriptions=1, max_rooms=1)
    conn, _ = connection()
    hub.add(conn)
    hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    with pytest.raises(ProtocolError) as exc:
        hub.subscribe(conn, ODDS, NO_FILTER)
    assert exc.value.code == "limit_exceeded"
    with pytest.raises(ProtocolError) as exc:
        hub.unsubscribe(conn, "sub_nope", None)
    assert exc.value.code == "not_found"
