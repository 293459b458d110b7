"""Delivery under pressure, with real sockets on both send paths: batching framing,
conflation rules, and the slow-consumer disconnect (4001).

A "stalled" client is a real WebSocket client with a tiny receive buffer that stops
reading after subscribing; fillers are published until the server has queued messages
for it in the connection's own buffer (the socket and the transport buffer are full).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import websockets

from football_realtime.service.connection import Connection

from ..cluster_support import odds
from ..support import TIMEOUT, UNIT, RunningServer, WSClient, running_server, token

PAD = "x" * 16000  # payloads may carry extra fields; big ones fill socket buffers fast
_uids = itertools.count(1)


@pytest.fixture(params=["fast", "asgi"])
def small_buffer_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """Both send paths, with a small outbound buffer (a few queued events)."""
    with running_server(fast=request.param == "fast", outbound_buffer_bytes=64 * 1024) as srv:
        yield srv


def goal(match_id: int, n: int, pad: str = "") -> dict[str, Any]:
    data: dict[str, Any] = {"match_id": match_id, "home_score": n, "away_score": 0, "minute": 1}
    if pad:
        data["pad"] = pad
    return {"event_type": "match_score_changed", "data": data}


def status(value: str) -> dict[str, Any]:
    return {"event_type": "system_status", "data": {"status": value}}


async def stalled_client(srv: RunningServer, batch: bool = False) -> tuple[WSClient, str]:
    """A connected premium client (user id returned) with a ~4 KB receive buffer; it
    reads only when the test calls recv."""
    uid = f"stalled-{next(_uids)}"
    query = {"token": token(uid)}
    if batch:
        query["batch"] = "1"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    sock.setblocking(False)
    ws = await websockets.connect(
        srv.url(**query),
        sock=sock,
        max_queue=1,
        max_size=None,
        ping_interval=None,
        open_timeout=TIMEOUT,
        compression=None,  # the padding must fill the socket, not deflate to nothing
    )
    return WSClient(ws), uid


def server_conn(srv: RunningServer, uid: str) -> Connection:
    conns = srv.call(lambda: [c for c in srv.realtime.hub.connections.values() if c.user_id == uid])
    assert len(conns) == 1
    conn: Connection = conns[0]
    return conn


async def publish_all(srv: RunningServer, events: list[dict[str, Any]]) -> None:
    async def run() -> None:
        for ev in events:
            await srv.realtime.publish(ev)

    await asyncio.to_thread(srv.run, run())


async def queued(srv: RunningServer, conn: Connection) -> int:
    """Messages the server holds in the connection's buffer, once its writer had time
    to drain what it could (the ASGI writer runs as a task)."""

    async def settle() -> int:
        await asyncio.sleep(0.02 * UNIT)
        return len(conn.out)

    n: int = await asyncio.to_thread(srv.run, settle())
    return n


async def back_up(srv: RunningServer, conn: Connection, match_id: int) -> int:
    """Publish padded goals until the server queues messages for ``conn``; return how many."""
    sent = 0
    while sent < 4000:
        await publish_all(srv, [goal(match_id, sent + i, PAD) for i in range(10)])
        sent += 10
        if await queued(srv, conn) > 0:
            return sent
    raise AssertionError("the connection never backed up")


async def read_until(
    client: WSClient, pred: Any, timeout: float = TIMEOUT
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Read frames until a message satisfies ``pred``: (frames as parsed, messages flattened)."""
    frames: list[Any] = []
    messages: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"condition not met; last messages: {messages[-3:]}"
        frame = orjson.loads(await asyncio.wait_for(client.ws.recv(), left))
        frames.append(frame)
        batch = frame if isinstance(frame, list) else [frame]
        messages.extend(batch)
        if any(pred(m) for m in batch):
            return frames, messages


def offsets(messages: list[dict[str, Any]], stream: str) -> list[int]:
    return [m["offset"] for m in messages if m.get("stream") == stream]


async def test_batching_sends_queued_events_as_one_json_array(any_server: RunningServer) -> None:
    client, uid = await stalled_client(any_server, batch=True)
    async with client:
        await client.subscribe("matches")
        conn = server_conn(any_server, uid)
        assert conn.batch
        fillers = await back_up(any_server, conn, 1)
        await publish_all(any_server, [goal(2, i) for i in range(30)])
        await publish_all(any_server, [{**goal(2, 99), "event_type": "match_ended"}])
        total = fillers + 31
        frames, messages = await read_until(
            client, lambda m: m.get("event_type") == "match_ended", TIMEOUT * 4
        )
    arrays = [f for f in frames if isinstance(f, list)]
    assert arrays, "nothing was batched although the socket was backed up"
    assert all(len(a) >= 2 for a in arrays)
    assert all(isinstance(m, dict) and "event_type" in m for a in arrays for m in a)
    # Every event arrived, once, in order: batching loses and reorders nothing.
    assert offsets(messages, "matches") == list(range(1, total + 1))


async def test_batching_adds_nothing_while_the_socket_keeps_up(any_server: RunningServer) -> None:
    async with await WSClient.connect(any_server.url(token=token(), batch="1")) as client:
        await client.subscribe("matches")
        for i in range(5):
            await publish_all(any_server, [goal(3, i)])
            frames, messages = await read_until(client, lambda m: "offset" in m)
            # One event published, one plain JSON object received at once.
            assert frames == messages
            assert [m["offset"] for m in messages if "offset" in m] == [i + 1]


async def test_without_batching_every_frame_is_one_message(any_server: RunningServer) -> None:
    client, uid = await stalled_client(any_server)
    async with client:
        await client.subscribe("matches")
        fillers = await back_up(any_server, server_conn(any_server, uid), 1)
        await publish_all(any_server, [{**goal(2, 99), "event_type": "match_ended"}])
        frames, messages = await read_until(
            client, lambda m: m.get("event_type") == "match_ended", TIMEOUT * 4
        )
    assert not any(isinstance(f, list) for f in frames)
    assert offsets(messages, "matches") == list(range(1, fillers + 2))


async def test_conflation_keeps_latest_keyed_values_and_every_goal(
    any_server: RunningServer,
) -> None:
    client, uid = await stalled_client(any_server)
    async with client:
        await client.subscribe("matches")
        await client.subscribe("odds")
        await client.subscribe("system_alerts")
        fillers = await back_up(any_server, server_conn(any_server, uid), 1)
        # All of these queue up behind the stalled socket.
        await publish_all(
            any_server,
            [
                odds(9, "A", 1.5),
                goal(9, 1),
                odds(9, "A", 1.6),
                status("degraded"),
                odds(9, "B", 2.5),
                goal(9, 2),
                odds(9, "A", 1.7),
                status("healthy"),
                {
                    "event_type": "odds_significant_change",
                    "data": {
                        "match_id": 9,
                        "bookmaker": "A",
                        "outcome": "home",
                        "old_odds": 1.5,
                        "new_odds": 1.7,
                        "change_pct": 13.3,
                    },
                },
                goal(9, 3),
                {**goal(9, 3), "event_type": "match_ended"},
            ],
        )
        _, messages = await read_until(
            client, lambda m: m.get("event_type") == "match_ended", TIMEOUT * 4
        )
    events = [m for m in messages if "offset" in m]
    by_type = [(m["event_type"], m["data"].get("bookmaker")) for m in events[fillers:]]
    # Delivered in publish order; stale odds of A and the first status were replaced.
    assert by_type == [
        ("match_score_changed", None),
        ("odds_updated", "B"),
        ("match_score_changed", None),
        ("odds_updated", "A"),
        ("system_status", None),
        ("odds_significant_change", "A"),
        ("match_score_changed", None),
        ("match_ended", None),
    ]
    latest_a = events[fillers + 3]
    assert latest_a["data"]["home_odds"] == 1.7
    assert latest_a["conflated"] == 2
    assert events[fillers + 4]["data"]["status"] == "healthy"
    assert events[fillers + 4]["conflated"] == 1
    assert "conflated" not in events[fillers + 1]  # B replaced nothing
    # Goals and match status are never conflated: every matches offset arrived.
    assert offsets(events, "matches") == list(range(1, fillers + 5))
    # Per stream, what arrives is in offset order (conflated offsets are skipped).
    odds_offsets = offsets(events, "odds")
    assert odds_offsets == sorted(odds_offsets) and len(odds_offsets) == 3
    stats = any_server.call(any_server.realtime.stats_snapshot)
    assert stats["conflated_events"] == 3


async def test_slow_consumer_is_closed_with_4001_and_recovers_its_gap(
    small_buffer_server: RunningServer,
) -> None:
    srv = small_buffer_server
    client, uid = await stalled_client(srv)
    async with client:
        res = await client.subscribe("matches")
        epoch = res["streams"]["matches"]["epoch"]
        conn = server_conn(srv, uid)
        sent = 0
        # Publish goals (never conflated) until the server gives up on the client.
        while not conn.closing:
            assert sent < 4000, "the slow consumer was never disconnected"
            await publish_all(srv, [goal(1, sent + i, PAD) for i in range(10)])
            sent += 10
        stats = srv.call(srv.realtime.stats_snapshot)
        assert stats["slow_consumer_disconnects"] == 1
        # Others are unaffected while this one is cut off.
        async with await WSClient.connect(srv.premium_url) as other:
            await other.subscribe("matches")
            await publish_all(srv, [goal(2, 0)])
            (ev,) = await other.events(1)
            assert ev["data"]["match_id"] == 2
        sent += 1
        # The stalled client reads again: what the server kept, then the close.
        got: list[int] = []
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            while True:
                msg = orjson.loads(await asyncio.wait_for(client.ws.recv(), TIMEOUT))
                if "offset" in msg:
                    got.append(msg["offset"])
        if srv.fast:
            # Our layer writes the close frame behind what the socket holds (and resets
            # the connection if it is still not read after a grace period).
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4001
        # On the ASGI path the endpoint ends and the server drops the connection; the
        # close code is recorded either way.
        assert srv.call(lambda: dict(srv.realtime.stats.closed_by_code)).get(4001) == 1
        assert got == list(range(1, len(got) + 1))  # a clean prefix, then the cut
        assert len(got) < sent
    # Reconnect and recover the gap from the last offset seen: nothing lost, no duplicate.
    last = got[-1] if got else 0
    async with await WSClient.connect(srv.url(token=token(uid))) as again:
        reply = await again.request(
            "subscribe",
            {
                "subscription_type": "matches",
                "since": {"matches": {"epoch": epoch, "offset": last}},
            },
        )
        assert reply["data"]["result"]["recovered"] is True
        await publish_all(srv, [goal(3, 0)])
        missed = await again.events(sent - last + 1, TIMEOUT * 2)
        assert [m["offset"] for m in missed] == list(range(last + 1, sent + 2))


async def test_bad_batch_parameter_is_refused(any_server: RunningServer) -> None:
    async with await WSClient.connect(any_server.ws_url + "?batch=maybe") as client:
        err = await client.recv()
        assert err["event_type"] == "error"
        assert "batch" in err["data"]["message"]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(client.ws.wait_closed(), TIMEOUT)
        assert client.ws.close_code == 4500
