"""Subscribing and resubscribing on a connection, without a socket: acks, held events
released in order, notices, positions, retries (Subscriber, Resync, Lifecycle)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from football_realtime.client.dispatch import Delivery
from football_realtime.client.errors import ClientClosed, InvalidFilterError
from football_realtime.client.models import ClientState
from football_realtime.client.subscription import (
    RecoveryFailed,
)

from .parts import Client, ack, error, event


def streams(epoch: str, offset: int) -> dict[str, Any]:
    return {"predictions": {"epoch": epoch, "offset": offset}}


def offsets(out: list[Delivery]) -> list[int | None]:
    return [d[0].offset for d in out if not isinstance(d[0], RecoveryFailed)]


async def test_events_held_while_resubscribing_come_out_in_order_once() -> None:
    c = Client()
    c.subscription()
    conn, ws = c.connect()
    await c.subscriber.renew_all(conn)
    assert ws.sent == [
        {"type": "subscribe", "id": 1, "data": {"filters": {}, "subscription_type": "predictions"}}
    ]
    for offset in (3, 5, 4, 5):
        assert c.resync.route(conn, event(offset)) is None
    await c.resync.send_barrier(conn)
    assert not conn.established
    acked = {"subscription_id": "sub_1", "streams": streams("e1", 2)}
    assert conn.channel.resolve(ack(1, acked), is_error=False) == []
    out = conn.channel.resolve(ack(2), is_error=False)
    assert offsets(out) == [3, 4, 5]
    assert conn.established and c.life.state is ClientState.OPEN and c.life.opened.is_set()
    assert c.stats.duplicates_dropped == 1
    # Live now: a duplicate is dropped, a new event passes.
    assert c.resync.route(conn, event(5)) is None
    live = c.resync.route(conn, event(6))
    assert live is not None and live[0].offset == 6
    assert c.stats.duplicates_dropped == 2
    assert c.tracker.snapshot() == {"predictions": {"epoch": "e1", "offset": 6}}


async def test_a_renewal_the_server_cannot_replay_gives_a_notice_first() -> None:
    c = Client()
    sub = c.subscription()
    conn, ws = c.connect()
    await c.open(conn, ws, subscription_id="sub_1", streams=streams("e1", 10))
    c.life.detach()
    conn2, ws2 = c.connect(gen=2)
    await c.subscriber.renew_all(conn2)
    assert ws2.last("subscribe")["data"]["since"] == {"predictions": {"epoch": "e1", "offset": 10}}
    assert c.resync.route(conn2, event(1)) is None  # held
    result = {
        "subscription_id": "sub_7",
        "streams": streams("e2", 1),
        "recovered": False,
        "reason": "epoch changed",
    }
    out = conn2.channel.resolve(ack(1, result), is_error=False)
    assert out == [(RecoveryFailed(sub, ("predictions",), "epoch changed"), None, False)]
    assert sub.recovered is False and sub.server_id == "sub_7"
    assert c.stats.recoveries_failed == 1 and c.stats.recoveries == 0
    await c.resync.send_barrier(conn2)
    # A new epoch restarts duplicate detection: what was held is news.
    assert offsets(conn2.channel.resolve(ack(2), is_error=False)) == [1]
    assert c.tracker.snapshot() == {"predictions": {"epoch": "e2", "offset": 1}}


async def test_a_recovered_renewal_counts_and_moves_the_position_to_its_ack() -> None:
    c = Client()
    sub = c.subscription()
    conn, ws = c.connect()
    await c.open(conn, ws, subscription_id="sub_1", streams=streams("e1", 10))
    c.life.detach()
    conn2, ws2 = c.connect(gen=2)
    out = await c.open(
        conn2, ws2, subscription_id="sub_2", streams=streams("e1", 15), recovered=True
    )
    assert out == [] and sub.recovered is True and c.stats.recoveries == 1
    assert c.tracker.snapshot() == {"predictions": {"epoch": "e1", "offset": 15}}


async def test_too_many_events_while_resubscribing_stop_the_client() -> None:
    c = Client(max_resync_events=2)
    conn, _ = c.connect()
    assert c.resync.route(conn, event(1)) is None
    assert c.resync.route(conn, event(2)) is None
    assert conn.fatal is None
    assert c.resync.route(conn, event(3)) is None
    assert isinstance(conn.fatal, ClientClosed)
    assert "more than 2 events arrived while resubscribing" in str(conn.fatal)


async def test_a_plain_acks_position_moves_after_one_heartbeat_round() -> None:
    c = Client()
    c.subscription()
    conn, ws = c.connect()
    await c.open(conn, ws, subscription_id="sub_1", streams=streams("e1", 6))
    later = c.subscription()
    await c.subscriber.send(conn, later)
    conn.channel.resolve(
        ack(ws.last("subscribe")["id"], {"subscription_id": "sub_2", "streams": streams("e1", 20)}),
        is_error=False,
    )
    assert later._ready.done()
    beat = c.resync.heartbeat_reply(conn)
    assert beat({}) == []
    assert c.tracker.snapshot()["predictions"]["offset"] == 6  # may still be in flight
    beat({})
    assert c.tracker.snapshot()["predictions"]["offset"] == 20


async def test_snapshot_state_already_seen_goes_to_the_asking_subscription_only() -> None:
    c = Client()
    c.subscription()
    conn, ws = c.connect()
    await c.open(conn, ws, subscription_id="sub_1", streams=streams("e1", 2))
    assert c.resync.route(conn, event(6)) is not None  # seen: 6
    asking = c.subscription(snapshot=True)
    await c.subscriber.send(conn, asking)
    assert ws.last("subscribe")["data"]["snapshot"] is True
    conn.channel.resolve(
        ack(ws.last("subscribe")["id"], {"subscription_id": "sub_2", "streams": streams("e1", 7)}),
        is_error=False,
    )
    old = c.resync.route(conn, event(4))
    assert old is not None and old[1:] == (asking, True) and old[0].snapshot
    new = c.resync.route(conn, event(7))
    assert new is not None and new[1:] == (asking, False) and new[0].snapshot
    after = c.resync.route(conn, event(8))
    assert after is not None and after[1:] == (None, False) and not after[0].snapshot


async def test_unavailable_is_retried_and_a_refusal_removes_the_subscription() -> None:
    c = Client()
    sub = c.subscription()
    conn, ws = c.connect()
    await c.subscriber.send(conn, sub)
    assert conn.channel.resolve(error(1, "unavailable"), is_error=True) == []
    for _ in range(100):
        if len(ws.sent) == 2:
            break
        await asyncio.sleep(0.001)
    assert [m["type"] for m in ws.sent] == ["subscribe", "subscribe"] and sub._retries == 1
    conn.channel.resolve(error(2, "invalid_filter", "bad"), is_error=True)
    assert not sub.active and not c.registry.holds(sub)
    assert isinstance(sub._ready.exception(), InvalidFilterError)
    with pytest.raises(InvalidFilterError):
        await sub._feed.get()  # type: ignore[union-attr]


async def test_an_ack_for_a_subscription_given_up_removes_it_on_the_server() -> None:
    c = Client()
    sub = c.subscription()
    conn, ws = c.connect()
    await c.subscriber.send(conn, sub)
    c.subscriber.drop(sub, None)  # e.g. subscribe() timed out
    assert conn.channel.resolve(ack(1, {"subscription_id": "sub_9"}), is_error=False) == []
    await asyncio.gather(*conn.tasks)
    assert ws.last("unsubscribe") == {
        "type": "unsubscribe",
        "id": 2,
        "data": {"subscription_id": "sub_9"},
    }
    assert sub.server_id is None


async def test_dropping_the_last_awaited_subscription_sends_another_barrier() -> None:
    c = Client()
    kept, dropped = c.subscription(), c.subscription()
    conn, ws = c.connect()
    await c.subscriber.renew_all(conn)
    assert c.resync.route(conn, event(3)) is None
    await c.resync.send_barrier(conn)
    conn.channel.resolve(ack(1, {"subscription_id": "a", "streams": streams("e1", 2)}), False)
    assert conn.channel.resolve(ack(3), is_error=False) == []  # still waiting for `dropped`
    c.subscriber.drop(dropped, None)
    await asyncio.gather(*conn.tasks)
    barrier = ws.sent[-1]
    assert barrier["type"] == "heartbeat" and barrier["id"] == 4
    assert offsets(conn.channel.resolve(ack(4), is_error=False)) == [3]
    assert conn.established and kept.active and not dropped.active
