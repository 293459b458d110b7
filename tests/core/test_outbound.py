"""The outbound buffer, conflation keys and batch framing (pure, no I/O)."""

from __future__ import annotations

import orjson

from football_realtime.core.conflation import CONFLATED_EVENT_TYPES, conflation_key
from football_realtime.core.encoding import batch_payload, mark_conflated
from football_realtime.core.events import EventType
from football_realtime.core.outbound import OutboundBuffer


def drain(buf: OutboundBuffer[str]) -> list[tuple[str, int]]:
    out = []
    while buf:
        out.append(buf.pop())
    return out


def test_fifo_and_byte_limit() -> None:
    buf: OutboundBuffer[str] = OutboundBuffer(limit=10)
    assert not buf and len(buf) == 0
    assert buf.push("a", 4)
    assert buf.push("b", 6)
    assert buf.size == 10
    assert not buf.push("c", 1)  # over the limit: the caller closes the connection
    assert drain(buf) == [("a", 0), ("b", 0), ("c", 0)]
    assert buf.size == 0


def test_keyed_item_replaces_queued_one_and_moves_to_the_end() -> None:
    buf: OutboundBuffer[str] = OutboundBuffer(limit=1000)
    buf.push("odds1-v1", 10, key="m1")
    buf.push("goal", 10)
    buf.push("odds2", 10, key="m2")
    buf.push("odds1-v2", 12, key="m1")
    buf.push("odds1-v3", 14, key="m1")
    assert len(buf) == 3
    assert buf.size == 10 + 10 + 14
    assert buf.conflated == 2
    # Publish order is kept among what is delivered; the newest value says it replaced 2.
    assert drain(buf) == [("goal", 0), ("odds2", 0), ("odds1-v3", 2)]


def test_key_is_free_again_once_its_item_is_sent() -> None:
    buf: OutboundBuffer[str] = OutboundBuffer(limit=1000)
    buf.push("v1", 1, key="k")
    assert buf.pop() == ("v1", 0)
    buf.push("other", 1)
    buf.push("v2", 1, key="k")
    buf.push("v3", 1, key="k")
    assert drain(buf) == [("other", 0), ("v3", 1)]


def test_unkeyed_items_are_never_replaced() -> None:
    buf: OutboundBuffer[str] = OutboundBuffer(limit=1000)
    for i in range(5):
        buf.push(f"goal{i}", 1)
    assert [x for x, _ in drain(buf)] == [f"goal{i}" for i in range(5)]


def test_replaced_entries_do_not_accumulate_without_bound() -> None:
    buf: OutboundBuffer[str] = OutboundBuffer(limit=1000)
    buf.push("head", 1)
    for i in range(10_000):
        buf.push(f"v{i}", 1, key="k")
    assert len(buf) == 2
    assert buf._entries is not None and len(buf._entries) < 200
    assert drain(buf) == [("head", 0), ("v9999", 9999)]


def test_peek_size_and_clear() -> None:
    buf: OutboundBuffer[str] = OutboundBuffer(limit=1000)
    assert buf.peek_size() == 0
    buf.push("a", 3, key="k")
    buf.push("b", 5)
    buf.push("c", 7, key="k")  # "a" replaced: the next live item is "b"
    assert buf.peek_size() == 5
    buf.clear()
    assert not buf and buf.size == 0 and buf.peek_size() == 0


def test_conflation_keys() -> None:
    odds = {"match_id": 7, "bookmaker": "A", "home_odds": 2.0}
    assert conflation_key(EventType.ODDS_UPDATED, odds) == conflation_key(
        EventType.ODDS_UPDATED, {**odds, "home_odds": 3.0}
    )
    assert conflation_key(EventType.ODDS_UPDATED, odds) != conflation_key(
        EventType.ODDS_UPDATED, {**odds, "bookmaker": "B"}
    )
    assert conflation_key(EventType.ODDS_UPDATED, odds) != conflation_key(
        EventType.ODDS_UPDATED, {**odds, "match_id": 8}
    )
    assert conflation_key(EventType.SYSTEM_STATUS, {"status": "healthy"}) is not None
    assert conflation_key(EventType.ANALYTICS_UPDATED, {"period": "day"}) != conflation_key(
        EventType.ANALYTICS_UPDATED, {"period": "week"}
    )
    for et in EventType:
        if et not in CONFLATED_EVENT_TYPES:
            assert conflation_key(et, {"match_id": 7, "bookmaker": "A"}) is None, et


def test_batch_and_conflated_framing() -> None:
    a = orjson.dumps({"event_type": "x", "offset": 1})
    b = orjson.dumps({"event_type": "y", "offset": 2})
    assert orjson.loads(batch_payload([a, b])) == [orjson.loads(a), orjson.loads(b)]
    assert orjson.loads(mark_conflated(a, 3)) == {"event_type": "x", "offset": 1, "conflated": 3}
