"""Recovery bookkeeping of the client (pure): positions, duplicates, resync order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from football_realtime.client.recovery import ResyncBuffer, StreamTracker


def ack(epoch: str, offset: int, stream: str = "matches") -> dict[str, dict[str, object]]:
    return {stream: {"epoch": epoch, "offset": offset}}


def test_position_from_acks_and_events_feeds_since() -> None:
    t = StreamTracker()
    assert t.since(["matches"]) is None
    assert t.on_ack(ack("e1", 4)) == []
    assert t.since(["matches", "odds"]) == {"matches": {"epoch": "e1", "offset": 4}}
    assert t.accept("matches", 6)
    assert t.since(["matches"]) == {"matches": {"epoch": "e1", "offset": 6}}
    # A later ack does not move a known position by itself...
    assert t.on_ack(ack("e1", 9)) == []
    assert t.since(["matches"]) == {"matches": {"epoch": "e1", "offset": 6}}
    # ...advance() does, never backwards, and only within the epoch.
    t.advance("matches", "e1", 9)
    t.advance("matches", "e1", 5)
    t.advance("matches", "other", 50)
    assert t.snapshot() == {"matches": {"epoch": "e1", "offset": 9}}


def test_duplicates_and_old_events_are_refused() -> None:
    t = StreamTracker()
    t.on_ack(ack("e1", 0))
    assert [t.accept("matches", o) for o in (1, 2, 2, 1, 3)] == [True, True, False, False, True]
    # Other streams are independent.
    assert t.accept("odds", 1)


def test_ack_offset_alone_does_not_hide_a_late_live_event() -> None:
    # The ack may report an offset whose event reaches this instance just after it.
    t = StreamTracker()
    t.on_ack(ack("e1", 7))
    assert t.accept("matches", 7)
    assert not t.accept("matches", 7)


def test_new_epoch_resets_the_stream_and_is_reported() -> None:
    t = StreamTracker()
    t.on_ack(ack("e1", 0))
    assert t.accept("matches", 40)
    assert t.on_ack(ack("e2", 3)) == ["matches"]
    assert t.since(["matches"]) == {"matches": {"epoch": "e2", "offset": 3}}
    # Offsets restart in the new epoch: 4 is new although 40 was seen before.
    assert t.accept("matches", 4)


def test_event_before_its_ack_then_ack_adopts_epoch_without_a_reset() -> None:
    t = StreamTracker()
    assert t.accept("odds", 5)
    assert t.since(["odds"]) is None  # no epoch known yet
    assert t.on_ack(ack("e1", 8, "odds")) == []
    assert not t.accept("odds", 5)
    assert t.since(["odds"]) == {"odds": {"epoch": "e1", "offset": 5}}


def test_malformed_ack_entries_are_ignored() -> None:
    t = StreamTracker()
    assert (
        t.on_ack({"a": "x", "b": {"epoch": 1, "offset": 2}, "c": {"epoch": "e", "offset": "2"}})
        == []
    )
    assert t.snapshot() == {}


def test_resync_orders_replays_of_several_subscriptions() -> None:
    t = StreamTracker()
    t.on_ack(ack("e1", 0))
    assert t.accept("matches", 4)
    buf: ResyncBuffer[str] = ResyncBuffer(100)
    # Subscription A replays 5, 8, 10; a notice; B replays 7, 9, 10; live 11; old 3.
    for o in (5, 8, 10):
        buf.add(f"m{o}", "matches", o)
    buf.add("status")
    for o in (7, 9, 10, 11, 3):
        buf.add(f"m{o}", "matches", o)
    out = buf.drain(t)
    assert out == ["m5", "m7", "m8", "status", "m9", "m10", "m11"]
    assert len(buf) == 0
    assert not t.accept("matches", 11)


def test_resync_keeps_items_without_stream_and_other_streams_in_place() -> None:
    t = StreamTracker()
    buf: ResyncBuffer[str] = ResyncBuffer(100)
    buf.add("notice")
    buf.add("o2", "odds", 2)
    buf.add("m3", "matches", 3)
    buf.add("o1", "odds", 1)
    buf.add("snap", None)
    out = buf.drain(t)
    assert out == ["notice", "o1", "m3", "o2", "snap"]


def test_resync_snapshot_items_already_seen_stay_in_place() -> None:
    t = StreamTracker()
    t.on_ack(ack("e1", 0))
    assert t.accept("matches", 6)
    buf: ResyncBuffer[str] = ResyncBuffer(100)
    buf.add("s3", "matches", 3, if_seen="s3-state")  # older than seen: state only
    buf.add("s7", "matches", 7, if_seen="s7-state")  # newer: a normal event
    buf.add("m8", "matches", 8)
    buf.add("m5", "matches", 5)  # a plain duplicate
    assert buf.drain(t) == ["s3-state", "s7", "m8"]


def test_resync_buffer_limit() -> None:
    buf: ResyncBuffer[int] = ResyncBuffer(2)
    buf.add(1)
    assert not buf.full
    buf.add(2)
    assert buf.full


@st.composite
def reconnect_scenario(draw: st.DrawFn) -> tuple[int, list[int], list[int]]:
    """Events 1..n of one stream, each for a match; subscriptions as match-id sets.
    The client saw everything up to offset ``k``; on resubscribe each subscription
    replays its matches after ``k`` up to the stream's ``top``, while live events
    after ``top`` interleave, and some events arrive twice (matched by two
    subscriptions, or replayed and live). Returns (k, arrival, expected)."""
    n = draw(st.integers(min_value=0, max_value=40))
    matches = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    subs = draw(st.lists(st.sets(st.integers(0, 3), min_size=1), min_size=1, max_size=3))
    k = draw(st.integers(0, n))
    top = draw(st.integers(k, n))
    wanted = {o for o in range(1, n + 1) if any(matches[o - 1] in s for s in subs)}
    replays = [[o for o in range(k + 1, top + 1) if matches[o - 1] in s] for s in subs]
    live = [o for o in range(top + 1, n + 1) if o in wanted]
    queues = [*replays, live]
    arrival: list[int] = []
    while any(queues):
        i = draw(st.sampled_from([j for j, q in enumerate(queues) if q]))
        arrival.append(queues[i].pop(0))
    if wanted:
        arrival += draw(st.lists(st.sampled_from(sorted(wanted)), max_size=5))
    return k, arrival, sorted(o for o in wanted if o > k)


@settings(max_examples=300)
@given(reconnect_scenario())
def test_every_missed_event_once_in_order(scenario: tuple[int, list[int], list[int]]) -> None:
    k, arrival, expected = scenario
    t = StreamTracker()
    t.on_ack(ack("e1", 0))
    for o in range(1, k + 1):
        t.accept("matches", o)
    buf: ResyncBuffer[int] = ResyncBuffer(10_000)
    for o in arrival:
        buf.add(o, "matches", o)
    out = buf.drain(t)
    assert out == expected
    # After the resync, live events continue the sequence and old ones stay out.
    nxt = (expected[-1] if expected else k) + 1
    assert t.accept("matches", nxt)
    assert all(not t.accept("matches", o) for o in expected)


def test_one_stream_position_class() -> None:
    """The parser's ``since``, the schema and the client's recovery point share one class."""
    from football_realtime import schema
    from football_realtime.client import recovery
    from football_realtime.core import messages, protocol

    assert recovery.StreamPosition is protocol.StreamPosition is messages.StreamPosition
    assert schema.StreamPosition is messages.StreamPosition
    t = StreamTracker()
    assert t.accept("odds", 5) and t.get("odds") is None and t.seen("odds") == 5
    t.on_ack(ack("e1", 3, "odds"))
    assert t.get("odds") == messages.StreamPosition("e1", 5)
