"""The fast path of ``ack`` messages (issue 16, the CPU an ack costs): on ``serve``'s
WebSocket layer an ack that arrives alone in a read while the connection's task waits
for the next message is handled right in the read callback (``on_text``), without
waking the task. These tests run real servers and real clients, check that the acks
did take that path (a spy on the connection's ``on_text``), and that it keeps the
protocol: errors, the rate limit, the ack latency metric, the session's positions,
and the order of messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvloop

from football_realtime.logs import ContextFilter

from ..support import RunningServer, WSClient, barrier, running_server, token
from .test_metrics import scrape_async
from .test_websocket import publish, score


def spy_on_text(srv: RunningServer) -> list[tuple[str, bool]]:
    """Wrap the ``on_text`` of the server's one connection: each message it is offered,
    as (``type``, whether the service took it in the read callback)."""
    seen: list[tuple[str, bool]] = []

    def install() -> None:
        (protocol,) = srv.ws_layer.connections
        inner = protocol.on_text
        assert inner is not None

        def spy(text: str) -> bool:
            took: bool = inner(text)
            try:
                kind = str(orjson.loads(text).get("type"))
            except orjson.JSONDecodeError:
                kind = "?"
            seen.append((kind, took))
            return took

        protocol.on_text = spy

    srv.call(install)
    return seen


def ack_text(epoch: str, offset: int, stream: str = "matches", **extra: Any) -> str:
    positions = {stream: {"epoch": epoch, "offset": offset, **extra}}
    return orjson.dumps({"type": "ack", "data": {"positions": positions}}).decode()


async def send_alone(c: WSClient, seen: list[tuple[str, bool]], text: str) -> None:
    """Send ``text`` alone in its read: after a heartbeat round trip (nothing else in
    flight), and nothing more until the server's ``on_text`` was offered it; then a
    round trip, so whatever it answered has arrived."""
    await barrier(c)
    before = len(seen)
    await c.ws.send(text)
    await wait_until(lambda: len(seen) > before)
    await barrier(c)


async def subscribed(srv: RunningServer, events: int = 2, **query: str) -> tuple[WSClient, str]:
    """A premium connection in a durable session, subscribed to ``matches``, that has
    received ``events`` events (offsets 1..events); returns it and the stream's epoch."""
    c = await WSClient.connect(srv.url(session_id="new", token=token("fiona"), **query))
    await c.wait_for(lambda m: m["event_type"] == "connection_status")
    res = await c.subscribe("matches")
    for _ in range(events):
        await publish(srv, score(1))
    await c.events(events)
    return c, res["streams"]["matches"]["epoch"]


async def stats_of(srv: RunningServer) -> dict[str, Any]:
    r = await asyncio.to_thread(httpx.get, srv.http_url + "/realtime/stats")
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
def server() -> Iterator[RunningServer]:
    # Session writes once a second by default: rare enough not to matter here.
    with running_server() as srv:
        yield srv


async def test_a_valid_ack_is_taken_in_the_read_callback_timed_and_recorded(
    server: RunningServer,
) -> None:
    c, epoch = await subscribed(server)
    seen = spy_on_text(server)
    await send_alone(c, seen, ack_text(epoch, 1))
    # The ack was taken; the heartbeats were offered and left to the receive loop.
    assert ("ack", True) in seen
    assert {kind for kind, took in seen if not took} == {"heartbeat"}
    assert not [m for m in c.inbox if m["event_type"] == "error"]  # no reply to a valid ack
    stats = await stats_of(server)
    assert stats["ack_latency_ms_by_event_type"]["match_score_changed"]["count"] == 1
    assert stats["session_unacked_offsets"] == 1  # offset 2 sent, 1 acknowledged
    m = await scrape_async(server)
    assert m.buckets("realtime_ack_latency_seconds", event_type="match_score_changed")[-1][1] == 1
    # The message is counted like any other (the connection's and the server's figures).
    reply = await c.request("get_stats")
    # subscribe, heartbeat, ack, heartbeat, get_stats
    assert reply["data"]["result"]["connection"]["messages_received"] == 5
    await c.close()


@pytest.mark.parametrize(
    ("ack", "fast", "words"),
    [
        # Parsed, then refused by what the connection was sent: on the fast path.
        (lambda epoch: ack_text(epoch, 5), True, "ahead of what was sent"),
        (lambda epoch: ack_text("not-the-epoch", 1), True, "is not the stream's current epoch"),
        (lambda epoch: ack_text(epoch, 1, stream="odds"), True, "no subscription"),
        # Not a valid ack message: the receive loop parses it and answers the same way.
        (lambda epoch: ack_text(epoch, -1), False, "must be {'epoch'"),
        (lambda epoch: ack_text(epoch, 1, stream="nope"), False, "unknown stream"),
        (lambda epoch: ack_text(epoch, 1, extra=1), False, "must be {'epoch'"),
    ],
)
async def test_an_invalid_ack_gets_invalid_ack_on_either_path(
    server: RunningServer, ack: Any, fast: bool, words: str
) -> None:
    """Whichever path an invalid ack takes, the same ``error``; no latency recorded."""
    c, epoch = await subscribed(server)
    seen = spy_on_text(server)
    await send_alone(c, seen, ack(epoch))
    assert [took for kind, took in seen if kind == "ack"] == [fast]
    (err,) = [m for m in c.inbox if m["event_type"] == "error"]
    assert err["data"]["code"] == "invalid_ack" and err["data"]["type"] == "ack"
    assert words in err["data"]["message"]
    stats = await stats_of(server)
    assert stats["errors_by_code"]["invalid_ack"] == 1
    assert "match_score_changed" not in stats["ack_latency_ms_by_event_type"]
    await c.close()


async def test_acks_on_the_fast_path_count_against_the_rate_limit() -> None:
    # Five messages may pass (bucket of 5, refilled once in 1,000 s): the subscribe,
    # then four acks; the fifth and sixth ack, and the heartbeat after them, are
    # refused with `rate_limited` (the heartbeat's refusal is the round trip that
    # shows the acks before it were handled).
    with running_server(
        rate_limit_per_second=0.001, rate_limit_burst=5, rate_limit_violations=10
    ) as srv:
        c, epoch = await subscribed(srv, events=1)
        seen = spy_on_text(srv)
        for i in range(6):
            await c.ws.send(ack_text(epoch, 1))
            # Each ack alone in its read: wait until the server has taken it.
            await wait_until(lambda i=i: len(seen) > i)
        assert seen == [("ack", True)] * 6
        await c.ws.send('{"type": "heartbeat", "id": "h"}')
        errors = []
        while len(errors) < 3:  # the heartbeat's refusal comes last
            errors.append(await c.wait_for(lambda m: m["event_type"] == "error"))
        assert [e["data"]["code"] for e in errors] == ["rate_limited"] * 3
        assert [m for m in c.inbox if m["event_type"] in ("error", "message_ack")] == []
        stats = await stats_of(srv)
        assert stats["errors_by_code"]["rate_limited"] == 3
        assert stats["errors_by_code"].get("invalid_ack", 0) == 0
        await c.close()


async def wait_until(cond: Any, timeout: float = 5.0) -> None:
    """Poll ``cond`` (a condition on the server's state) until true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


async def test_lines_logged_on_the_fast_path_carry_the_connection() -> None:
    """An ack handled in the read callback runs in the connection's logging context
    (its task's), so what it logs is tagged like the receive loop's lines: here the
    rate limit closing a flooding connection."""
    records: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Catch()
    handler.addFilter(ContextFilter())
    # On uvloop (what `serve` runs), a read callback runs in the context the transport
    # was made in, not the task's.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    logger = logging.getLogger("football_realtime")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        # The subscribe and one ack pass; the next two acks are refused, the second
        # refusal in a row closes the connection.
        with running_server(
            rate_limit_per_second=0.001, rate_limit_burst=2, rate_limit_violations=1
        ) as srv:
            c, epoch = await subscribed(srv, events=1)
            conn_id = next(iter(srv.realtime.hub.connections))
            seen = spy_on_text(srv)
            for i in range(3):
                await c.ws.send(ack_text(epoch, 1))
                await wait_until(lambda i=i: len(seen) > i)
            assert seen == [("ack", True)] * 3
            flood = [r for r in records if "closing flooding connection" in r.getMessage()]
            assert [r.__dict__["connection_id"] for r in flood] == [conn_id]
            assert flood[0].__dict__["user_id"] == "fiona"
            await c.close()
    finally:
        asyncio.set_event_loop_policy(policy)
        logger.removeHandler(handler)
        logger.setLevel(level)
