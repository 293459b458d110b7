"""Structured logs: `serve` with REALTIME_LOG_FORMAT=json writes only JSON lines, and
the lines about a connection or an event carry connection_id, user_id and
correlation_id (uvicorn's own lines included)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import threading
import time
from typing import Any

import httpx
import orjson
import websockets

from football_realtime.logs import (
    CURRENT_EVENT,
    ContextFilter,
    CorrelationIdMiddleware,
    JsonFormatter,
    TextFormatter,
    bind_connection,
    bind_correlation_id,
    configure_logging,
    reset_correlation_id,
)

from .support import TIMEOUT, UNIT, admin_headers, make_settings, start_serve_process, token


class LineReader:
    """Drains a process's output in a thread (so a full pipe never blocks it)."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                self.lines.append(raw.decode().rstrip("\n"))

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            lines = list(self.lines)
        return [orjson.loads(line) for line in lines if line.strip()]

    def join(self) -> None:
        self._thread.join(TIMEOUT)


def score(minute: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_type": "match_score_changed",
        "data": {"match_id": 7, "home_score": 1, "away_score": 0, "minute": minute, **extra},
    }


async def test_json_lines_carry_connection_user_and_correlation_ids() -> None:
    sp = start_serve_process(
        {
            "REALTIME_LOG_FORMAT": "json",
            "REALTIME_LOG_LEVEL": "info",
            "REALTIME_OUTBOUND_BUFFER_BYTES": str(1 << 20),
            "REALTIME_MAX_REQUEST_BODY": str(1 << 20),  # 200 KB events below
        }
    )
    reader = LineReader(sp.proc.stdout)
    try:
        async with httpx.AsyncClient(base_url=sp.http_url, timeout=TIMEOUT) as http:
            alice = await websockets.connect(sp.ws_url + f"?user_id=alice&token={token('alice')}")
            hello = orjson.loads(await alice.recv())
            alice_id = hello["data"]["connection_id"]
            await alice.send('{"type":"subscribe","id":1,"data":{"subscription_type":"matches"}}')
            assert orjson.loads(await alice.recv())["event_type"] == "message_ack"

            # The request's X-Correlation-ID goes on with the event and into the logs.
            r = await http.post(
                "/realtime/broadcast",
                json=score(1),
                headers={**admin_headers(), "X-Correlation-ID": "req-42"},
            )
            assert r.status_code == 200, r.text
            ev = orjson.loads(await alice.recv())
            while "offset" not in ev:  # user_subscription_changed comes first
                ev = orjson.loads(await alice.recv())
            assert ev["correlation_id"] == "req-42"

            # A client that stops reading is dropped during a fan-out: that line is
            # about a connection and an event at once.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", sp.port))
            sock.setblocking(False)
            slow = await websockets.connect(
                sp.ws_url + f"?user_id=slowpoke&token={token('slowpoke')}",
                sock=sock,
                max_queue=1,
                close_timeout=0.5 * UNIT,
                compression=None,  # the padding must fill the socket, not deflate to nothing
            )
            slow_id = orjson.loads(await slow.recv())["data"]["connection_id"]
            await slow.send('{"type":"subscribe","id":1,"data":{"subscription_type":"matches"}}')
            assert orjson.loads(await slow.recv())["event_type"] == "message_ack"
            await alice.close()

            def dropped() -> list[dict[str, Any]]:
                return [x for x in reader.records() if "slow consumer" in x["message"]]

            pad = "x" * 200_000
            for i in range(200):
                if dropped():
                    break
                body = {**score(i % 90, pad=pad), "correlation_id": f"burst-{i}"}
                r = await http.post("/realtime/broadcast", json=body, headers=admin_headers())
                assert r.status_code == 200
            deadline = time.monotonic() + TIMEOUT
            while not dropped():
                assert time.monotonic() < deadline, "no slow-consumer line was logged"
                await asyncio.sleep(0.02 * UNIT)
            with contextlib.suppress(websockets.ConnectionClosed):
                await slow.recv()
            await slow.close()
            sock.close()
    finally:
        sp.proc.terminate()
        sp.proc.wait(TIMEOUT * 2)
        reader.join()  # drained to EOF before stop() closes the pipe
        sp.stop()

    records = reader.records()  # every line parsed as JSON, or this raised
    assert len(records) == len([x for x in reader.lines if x.strip()])
    for rec in records:
        assert {"ts", "level", "logger", "message", "connection_id", "user_id"} <= set(rec)
        assert "correlation_id" in rec

    def about(conn_id: str) -> list[dict[str, Any]]:
        return [x for x in records if x["connection_id"] == conn_id]

    alice_lines = about(alice_id)
    messages = [x["message"] for x in alice_lines]
    assert "connection opened" in messages
    assert "connection closed" in messages
    assert any(x["logger"] == "uvicorn.error" and "[accepted]" in x["message"] for x in alice_lines)
    closed = next(x for x in alice_lines if x["message"] == "connection closed")
    assert closed["user_id"] == "alice"
    assert closed["code"] == 1000
    assert closed["messages_received"] == 1

    published = next(x for x in records if x["message"] == "broadcast published")
    assert published["correlation_id"] == "req-42"
    assert published["event_type"] == "match_score_changed"
    access = [x for x in records if x["logger"] == "uvicorn.access"]
    assert any(x["correlation_id"] == "req-42" and x["status_code"] == 200 for x in access)

    drop = next(x for x in records if "slow consumer" in x["message"])
    assert drop["connection_id"] == slow_id
    assert drop["user_id"] == "slowpoke"
    assert drop["correlation_id"].startswith("burst-")
    assert drop["event_type"] == "match_score_changed"
    assert isinstance(drop["offset"], int)
    assert drop["level"] == "warning"


def test_text_format_and_the_context_filter() -> None:
    buf = io.StringIO()
    logger = logging.getLogger("football_realtime.test_logs")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(make_settings(log_format="text", log_level="debug"), stream=buf)
        # A second call replaces our handler rather than adding one.
        handler = configure_logging(make_settings(log_format="text", log_level="debug"), stream=buf)
        assert sum(1 for h in root.handlers if h.__dict__.get("_football_realtime")) == 1
        assert any(isinstance(f, ContextFilter) for f in handler.filters)
        assert isinstance(handler.formatter, TextFormatter)

        async def in_a_connection_task() -> None:
            bind_connection("c_abc")
            token = bind_correlation_id("corr-1")
            logger.info("hello\x1b[31m red\r\nforged line")
            reset_correlation_id(token)
            # Explicit extra wins over the context.
            logger.warning("about another", extra={"connection_id": "c_other", "user_id": "u9"})

        asyncio.run(in_a_connection_task())
        logger.info("outside")
    finally:
        for h in list(root.handlers):
            if h.__dict__.get("_football_realtime"):
                root.removeHandler(h)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [x for x in buf.getvalue().splitlines() if "football_realtime.test_logs:" in x]
    assert len(lines) == 3, buf.getvalue()
    assert "hello\\x1b[31m red\\x0d\\x0aforged line" in lines[0]  # control chars escaped
    assert "connection_id=c_abc" in lines[0] and "correlation_id=corr-1" in lines[0]
    assert "connection_id=c_other" in lines[1] and "user_id=u9" in lines[1]
    assert "connection_id" not in lines[2]  # the binding ended with the task


def test_json_formatter_reads_the_event_being_fanned_out() -> None:
    from football_realtime.brokers.base import PublishedEvent
    from football_realtime.core.events import EventType, SubscriptionType

    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "drop %s", ("it",), None)
    payload = orjson.dumps(
        {"event_type": "odds_updated", "stream": "odds", "offset": 9, "correlation_id": "k1"}
    )
    ev = PublishedEvent(SubscriptionType.ODDS, 9, EventType.ODDS_UPDATED, {}, payload, 1.0)
    token = CURRENT_EVENT.set(ev)
    try:
        assert ContextFilter().filter(rec)
    finally:
        CURRENT_EVENT.reset(token)
    out = orjson.loads(JsonFormatter().format(rec))
    assert out["message"] == "drop it"
    assert out["correlation_id"] == "k1"
    assert out["offset"] == 9 and out["stream"] == "odds"
    assert out["connection_id"] is None


async def test_correlation_middleware_ignores_unprintable_ids() -> None:
    from football_realtime.logs import current_correlation_id

    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_correlation_id())

    mw = CorrelationIdMiddleware(app)
    for value in (b"abc-1", b"bad value\x01", b"x" * 500):
        await mw({"type": "http", "headers": [(b"x-request-id", value)]}, None, None)
    assert seen == ["abc-1", None, None]
    assert current_correlation_id() is None
