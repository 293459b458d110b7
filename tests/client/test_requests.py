"""RequestChannel: ids, replies, typed errors, lost connections; no socket."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from football_realtime.client.errors import (
    InvalidFilterError,
    RequestError,
    RequestTimeout,
    UnavailableError,
)
from football_realtime.client.requests import Lost, RequestChannel

from .parts import FakeSocket, ack, error


async def test_ids_come_from_the_shared_counter_and_data_is_optional() -> None:
    ids = itertools.count(7)
    ws_a, ws_b = FakeSocket(), FakeSocket()
    a: RequestChannel[str] = RequestChannel(ws_a, ids)
    b: RequestChannel[str] = RequestChannel(ws_b, ids)
    await a.send("heartbeat", None)
    await b.send("join", {"room": "match:1"})
    await a.fire("get_stats", None)
    assert ws_a.sent == [{"type": "heartbeat", "id": 7}, {"type": "get_stats", "id": 9}]
    assert ws_b.sent == [{"type": "join", "id": 8, "data": {"room": "match:1"}}]
    assert len(a) == 2 and len(b) == 1


async def test_an_ack_settles_its_request_and_returns_what_the_callback_gives() -> None:
    ws = FakeSocket()
    ch: RequestChannel[str] = RequestChannel(ws, itertools.count(1))
    seen: list[dict[str, object]] = []

    def on_ack(result: dict[str, object]) -> list[str]:
        seen.append(result)
        return ["delivered"]

    fut = await ch.send("subscribe", {"filters": {}}, on_ack=on_ack)
    other = await ch.send("heartbeat", None)
    assert ch.resolve(ack(1, {"subscription_id": "sub_1"}), is_error=False) == ["delivered"]
    assert fut.result() == {"subscription_id": "sub_1"}
    assert seen == [{"subscription_id": "sub_1"}]
    assert not other.done() and len(ch) == 1
    # A result that is not an object reads as an empty one.
    assert ch.resolve({"event_type": "message_ack", "data": {"id": 2, "result": 3}}, False) == []
    assert other.result() == {}


async def test_an_error_reply_is_typed_by_its_code() -> None:
    ch: RequestChannel[str] = RequestChannel(FakeSocket(), itertools.count(1))
    errors: list[RequestError] = []

    def on_error(exc: RequestError) -> list[str]:
        errors.append(exc)
        return []

    fut = await ch.send("subscribe", {}, on_error=on_error)
    ch.resolve(error(1, "invalid_filter", "min_confidence: too big"), is_error=True)
    exc = fut.exception()
    assert isinstance(exc, InvalidFilterError)
    assert (exc.code, exc.message, exc.request_type) == (
        "invalid_filter",
        "min_confidence: too big",
        "subscribe",
    )
    assert errors == [exc]
    fut2 = await ch.send("subscribe", {})
    ch.resolve(error(2, "unavailable", type_="join"), is_error=True)
    exc2 = fut2.exception()
    assert isinstance(exc2, UnavailableError) and exc2.request_type == "join"


async def test_replies_to_no_known_request_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    ch: RequestChannel[str] = RequestChannel(FakeSocket(), itertools.count(1))
    fut = await ch.send("heartbeat", None)
    with caplog.at_level(logging.WARNING, "football_realtime.client"):
        assert ch.resolve(ack(99), is_error=False) == []
        assert ch.resolve({"event_type": "message_ack", "data": "x"}, is_error=False) == []
        assert ch.resolve(ack(True), is_error=False) == []  # type: ignore[arg-type]
        assert ch.resolve(error(42, "rate_limited", "slow down"), is_error=True) == []
    assert not fut.done() and len(ch) == 1
    assert "server error: rate_limited: slow down" in caplog.text


async def test_a_closed_socket_loses_the_request_at_once() -> None:
    ws = FakeSocket()
    ch: RequestChannel[str] = RequestChannel(ws, itertools.count(1))
    ws.closed = True
    with pytest.raises(Lost):
        await ch.send("heartbeat", None)
    assert len(ch) == 0


async def test_the_end_of_the_connection_fails_what_waits() -> None:
    ch: RequestChannel[str] = RequestChannel(FakeSocket(), itertools.count(1))
    waiting = asyncio.create_task(ch.request("get_stats", None, timeout=5))
    unawaited = await ch.send("heartbeat", None)
    await asyncio.sleep(0)
    ch.fail_all()
    with pytest.raises(Lost):
        await waiting
    assert isinstance(unawaited.exception(), Lost)
    assert len(ch) == 0
    assert ch.resolve(ack(1), is_error=False) == []  # too late: ignored


async def test_request_waits_for_its_reply_or_times_out() -> None:
    ws = FakeSocket()
    ch: RequestChannel[str] = RequestChannel(ws, itertools.count(1))
    task = asyncio.create_task(ch.request("get_stats", None, timeout=5))
    await asyncio.sleep(0)
    ch.resolve(ack(1, {"connections": 3}), is_error=False)
    assert await task == {"connections": 3}
    with pytest.raises(RequestTimeout, match="no reply to heartbeat"):
        await ch.request("heartbeat", None, timeout=0.01)
    assert len(ch) == 1  # a late reply still settles it
    ch.resolve(ack(2), is_error=False)
    assert len(ch) == 0
