"""Shared compression in the fan-out, without sockets: one deflate per message and
view, the same compressed frame for every compressing connection of that view, plain
frames for the others (service/connection.py ``SharedDeflate``)."""

from __future__ import annotations

from football_realtime.brokers.base import PublishedEvent
from football_realtime.core.encoding import text_frame
from football_realtime.core.events import EventType, SubscriptionType
from football_realtime.core.permissions import TierPolicy
from football_realtime.core.subscriptions import SubscriptionFilter
from football_realtime.service.connection import SharedDeflate
from football_realtime.service.hub import Hub
from football_realtime.service.views import TierViews
from football_realtime.stats import ServiceStats

from .memory_sink import connection, published

PREDICTIONS = SubscriptionType.PREDICTIONS
ODDS = SubscriptionType.ODDS
NO_FILTER = SubscriptionFilter()


def make_hub() -> Hub:
    policy = TierPolicy.from_config(
        {"free": {"hidden_fields": {"predictions": ["strategy"]}}, "premium": {}}, "free"
    )
    return Hub(
        ServiceStats(), max_subscriptions=10, max_rooms=5, render_view=TierViews(policy).render
    )


def prediction(offset: int, match_id: int = 1) -> PublishedEvent:
    return published(
        EventType.PREDICTION_CREATED,
        offset,
        match_id=match_id,
        confidence=0.8,
        league="英超",
        home_team="曼联",
        away_team="切尔西",
        strategy="ml_ensemble",
    )


def test_one_deflate_per_event_and_view_shared_by_every_compressing_connection() -> None:
    deflate = SharedDeflate(min_bytes=0)
    hub = make_hub()
    paid_z = [connection(f"pz{i}", deflate=deflate) for i in range(3)]
    free_z = [connection(f"fz{i}", view="free", deflate=deflate) for i in range(3)]
    paid_plain = [connection(f"pp{i}") for i in range(2)]
    free_plain = [connection(f"fp{i}", view="free") for i in range(2)]
    for conn, _ in paid_z + free_z + paid_plain + free_plain:
        hub.add(conn)
        hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    ev = prediction(7)
    assert hub.deliver(ev) == 10
    assert deflate.compressed == 2  # one per view (unrestricted, free), not per delivery
    for group in (paid_z, free_z):
        first = group[0][1].frames[0]
        assert first[0] == 0xC1  # RSV1: compressed
        assert all(sink.frames[0] is first for _, sink in group)  # the same bytes object
    for _, sink in paid_plain:
        assert sink.frames == [text_frame(ev.payload)]
    # Compressed and plain connections of a view receive the same message.
    assert paid_z[0][1].messages() == paid_plain[0][1].messages()
    assert free_z[0][1].messages() == free_plain[0][1].messages()
    assert "strategy" not in free_z[0][1].messages()[0]["data"]
    assert deflate.saved > 0


def test_messages_below_the_threshold_go_plain() -> None:
    deflate = SharedDeflate(min_bytes=10_000)
    hub = make_hub()
    conn, sink = connection(deflate=deflate)
    hub.add(conn)
    hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    hub.deliver(prediction(1))
    assert sink.frames[0][0] == 0x81  # plain text frame: RSV1 clear for this message
    assert deflate.compressed == 0
    hub.send_payload(conn, b'{"event_type":"pong"}')
    assert sink.frames[1] == text_frame(b'{"event_type":"pong"}')


def test_queued_conflated_and_batched_messages_are_compressed_per_connection() -> None:
    deflate = SharedDeflate(min_bytes=0)
    hub = make_hub()
    conn, sink = connection(batch=True, deflate=deflate)
    hub.add(conn)
    hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    hub.subscribe(conn, ODDS, NO_FILTER)
    conn.writable_changed(False)
    for off in (1, 2, 3):
        hub.deliver(prediction(off, match_id=off))
    for off in (1, 2):  # the same conflation key: the second replaces the first
        hub.deliver(
            published(
                EventType.ODDS_UPDATED,
                off,
                match_id=9,
                bookmaker="b",
                home_odds=2.0 + off,
                draw_odds=3.0,
                away_odds=4.0,
            )
        )
    conn.writable_changed(True)
    (frame,) = sink.frames
    assert frame[0] == 0xC1
    (batch,) = sink.messages()
    assert [m["offset"] for m in batch] == [1, 2, 3, 2]
    assert batch[-1]["conflated"] == 1
    hub.deliver(prediction(4))  # the socket keeps up again: one message, compressed
    assert sink.frames[-1][0] == 0xC1
    assert sink.messages()[-1]["offset"] == 4


def test_a_replayed_event_is_compressed_for_its_connection() -> None:
    deflate = SharedDeflate(min_bytes=0)
    hub = make_hub()
    conn, sink = connection(view="free", deflate=deflate)
    hub.add(conn)
    assert hub.send_event(conn, prediction(5))
    assert sink.frames[0][0] == 0xC1
    (msg,) = sink.messages()
    assert msg["offset"] == 5 and "strategy" not in msg["data"]


def test_a_connection_without_compression_never_touches_the_compressor() -> None:
    deflate = SharedDeflate(min_bytes=0)
    hub = make_hub()
    conn, sink = connection()
    assert conn.deflate is None
    hub.add(conn)
    hub.subscribe(conn, PREDICTIONS, NO_FILTER)
    hub.deliver(prediction(1))
    assert deflate.compressed == 0 and sink.frames[0][0] == 0x81
