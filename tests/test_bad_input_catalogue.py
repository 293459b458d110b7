"""The bad-input catalogue: every protocol (P), bad-input (B) and auth/security (S) case of
../shared/reference/reliability-catalogue.md, each with the answer the service gives.

Each test is named after its case. P1 (the Autobahn suite) runs in
test_rfc6455_conformance.py; S10 (ban a user on every instance) in test_cluster_control.py.
Most cases run against one server with the settings we ship (``srv``); cases that need
a short timeout or a small limit start their own. The last tests check that, after
all of it, a fresh client is served and nothing leaked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import jwt
import orjson
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from football_realtime.core.protocol import ERROR_CODES, ProtocolError, parse_client_message
from football_realtime.core.subscriptions import EventAttributes, Subscription
from football_realtime.logredact import RedactingFilter

from .support import (
    ADMIN,
    JWT_SECRET,
    TIMEOUT,
    UNIT,
    RunningServer,
    WSClient,
    barrier,
    post_broadcast,
    running_server,
    start_serve_process,
    token,
)

ORIGIN = "https://app.example.com"
MATCH = {"match_id": 7, "home_team": "A", "away_team": "B", "league": "L"}

# -- a raw WebSocket client: frames exactly as given --------------------------------


class RawWS:
    """Speaks WebSocket frames byte by byte, so it can break every rule."""

    opened: ClassVar[list[asyncio.StreamWriter]] = []  # closed after each test (fixture below)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def handshake(
        cls, port: int, path: str = "/realtime/ws", headers: dict[str, str] | None = None
    ) -> tuple[RawWS, int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        cls.opened.append(writer)
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status = int(head.split(b" ", 2)[1])
        return cls(reader, writer), status, head.decode("latin-1")

    def frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv1: bool = False,
        mask: bool = True,
    ) -> bytes:
        b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head = bytes((b0, mbit | n))
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

    def send(self, opcode: int, payload: bytes = b"", **kw: Any) -> None:
        self.writer.write(self.frame(opcode, payload, **kw))

    def text(self, obj: Any) -> None:
        self.send(0x1, orjson.dumps(obj))

    async def read_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """One frame: (opcode, payload); a compressed one (RSV1, permessage-deflate
        without context takeover) inflated."""
        head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        n = head[1] & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        data = await self.reader.readexactly(n)
        if head[0] & 0x40:
            data = zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")
        return head[0] & 0x0F, data

    async def until_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str, list[Any]]:
        """Read until the server's close frame: (code, reason, data frames before it).
        (None, "", ...) when the TCP connection ended without one."""
        before: list[Any] = []
        try:
            while True:
                op, data = await self.read_frame(timeout)
                if op == 0x8:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                    return code, data[2:].decode(), before
                before.append(orjson.loads(data) if op == 0x1 else (op, data))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None, "", before

    async def eof(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed the TCP connection."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture(autouse=True)
async def _close_raw_sockets() -> Any:
    yield
    while RawWS.opened:
        writer = RawWS.opened.pop()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def raw_http(port: int, request: bytes, timeout: float = TIMEOUT) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


async def closed_with(ws: Any, timeout: float = TIMEOUT) -> tuple[int, str, list[Any]]:
    got: list[Any] = []
    try:
        while True:
            got.append(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None, got
        return exc.rcvd.code, exc.rcvd.reason, got


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    """The shipped settings, plus an allowed Origin (S1/S2)."""
    with running_server(allowed_origins=[ORIGIN]) as s:
        yield s


async def usable(c: WSClient) -> None:
    """The connection still answers requests."""
    reply = await c.request("heartbeat")
    assert reply["event_type"] == "message_ack"


async def bystander_receives(srv: RunningServer, c: WSClient) -> None:
    """Another client's subscription still gets what is published."""
    srv.publish({"event_type": "match_started", "data": MATCH})
    ev = (await c.events(1))[0]
    assert ev["event_type"] == "match_started"


# == P. Protocol ======================================================================


@pytest.mark.parametrize(
    "payload",
    [b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80"],
    ids=["truncated", "overlong", "surrogate-D800"],
)
async def test_P2_invalid_utf8_closes_1007(srv: RunningServer, payload: bytes) -> None:
    ws, status, _ = await RawWS.handshake(srv.port)
    assert status == 101
    ws.send(0x1, b'{"type":"heartbeat","x":"' + payload + b'"}')
    code, _, _ = await ws.until_close()
    assert code == 1007
    ws.close()


@pytest.mark.parametrize(
    "frame",
    [
        {"opcode": 0x1, "payload": b"{}", "mask": False},  # unmasked client frame
        {"opcode": 0x1, "payload": b"{}", "rsv1": True},  # RSV1 without an extension
        {"opcode": 0x3, "payload": b""},  # reserved data opcode
        {"opcode": 0xB, "payload": b""},  # reserved control opcode
        {"opcode": 0x9, "payload": b"x" * 126},  # ping over 125 bytes
        {"opcode": 0x9, "payload": b"p", "fin": False},  # fragmented ping
        {"opcode": 0x0, "payload": b"orphan"},  # continuation without a start
    ],
    ids=["unmasked", "rsv1", "opcode-3", "opcode-B", "ping-126", "fragmented-ping", "orphan-cont"],
)
async def test_P3_framing_violations_close_1002(srv: RunningServer, frame: dict) -> None:
    ws, _, _ = await RawWS.handshake(srv.port)
    opcode, payload = frame.pop("opcode"), frame.pop("payload")
    ws.send(opcode, payload, **frame)
    code, _, _ = await ws.until_close()
    assert code == 1002
    ws.close()


@pytest.mark.parametrize(
    "payload",
    [struct.pack("!H", c) for c in (999, 1005, 1006, 1015, 5000)] + [b"\x03"],
    ids=["999", "1005", "1006", "1015", "5000", "1-byte"],
)
async def test_P4_invalid_close_frames_close_1002(srv: RunningServer, payload: bytes) -> None:
    ws, _, _ = await RawWS.handshake(srv.port)
    ws.send(0x8, payload)
    code, _, _ = await ws.until_close()
    assert code == 1002
    ws.close()


async def test_P4_valid_close_is_echoed_and_server_closes_tcp(srv: RunningServer) -> None:
    ws, _, _ = await RawWS.handshake(srv.port)
    ws.send(0x8, struct.pack("!H", 1000) + b"bye")
    code, reason, _ = await ws.until_close()
    assert (code, reason) == (1000, "bye")
    assert await ws.eof()
    ws.close()


@pytest.mark.parametrize("chunk", [0, 1, 3], ids=["one-write", "byte-by-byte", "3-bytes"])
async def test_P4_close_inside_a_fragmented_message_is_echoed(
    srv: RunningServer, chunk: int
) -> None:
    """RFC 6455 §5.4 lets control frames interleave with fragments (Autobahn 7.1.5): the
    partial message is dropped and the close echoed, however the bytes arrive."""
    ws, _, _ = await RawWS.handshake(srv.port)
    wire = (
        ws.frame(0x1, b'{"type":', fin=False)
        + ws.frame(0x9, b"ping in between")
        + ws.frame(0x0, b'"heart', fin=False)
        + ws.frame(0x8, struct.pack("!H", 1000) + b"bye")
    )
    if chunk == 0:
        ws.writer.write(wire + ws.frame(0x0, b'beat"}'))  # what follows a close is ignored
    else:
        for i in range(0, len(wire), chunk):
            ws.writer.write(wire[i : i + chunk])
            await ws.writer.drain()
            await asyncio.sleep(0.001)
    code, reason, before = await ws.until_close()
    assert (code, reason) == (1000, "bye")
    # The connection status, the pong; no reply to the dropped message.
    assert [b["data"]["status"] if isinstance(b, dict) else b for b in before] == [
        "connected",
        (0xA, b"ping in between"),
    ]
    assert await ws.eof()
    ws.close()


async def test_P5a_pings_get_identical_pongs_and_pongs_are_ignored(srv: RunningServer) -> None:
    ws, _, _ = await RawWS.handshake(srv.port)
    await ws.read_frame()  # connection_status
    for payload in (b"one", b"", b"\x00\xff" * 20):
        ws.send(0x9, payload)
        assert await ws.read_frame() == (0xA, payload)
    ws.send(0xA, b"unsolicited")
    ws.text({"type": "heartbeat", "id": 1})
    op, data = await ws.read_frame()
    assert op == 0x1 and orjson.loads(data)["event_type"] == "message_ack"
    ws.close()


async def test_P5b_silent_client_is_closed_after_ping_timeout() -> None:
    with running_server(ping_interval=0.3 * UNIT, ping_timeout=0.3 * UNIT) as s:
        ws, _, _ = await RawWS.handshake(s.port)
        started = time.monotonic()
        code, reason, before = await ws.until_close()
        # Read our pings but never answer: closed after interval + timeout.
        assert (code, reason) == (1011, "keepalive ping timeout")
        assert (0x9, before[-1][1]) == before[-1]
        assert time.monotonic() - started >= 0.5 * UNIT
        deadline = time.monotonic() + TIMEOUT
        while s.call(lambda: len(s.realtime.hub.connections)):
            assert time.monotonic() < deadline, "connection not freed"
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("headers", "status", "needle"),
    [
        ({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}, 400, b"missing Sec-WebSocket-Key"),
        ({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "8"}, 426, b"Sec-WebSocket-Version: 13"),
        ({}, 404, b"Not Found"),
    ],
    ids=["no-key", "version-8", "no-upgrade"],
)  # fmt: skip
async def test_P6_bad_handshakes_get_4xx_without_upgrade(
    srv: RunningServer, headers: dict, status: int, needle: bytes
) -> None:
    lines = ["GET /realtime/ws HTTP/1.1", "Host: x", *(f"{k}: {v}" for k, v in headers.items())]
    answer = await raw_http(srv.port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer
    assert needle in answer
    assert b"Traceback" not in answer and b"101" not in answer.split(b"\r\n")[0]


async def test_P7_subprotocol_with_token_is_never_echoed(srv: RunningServer) -> None:
    secret = token("p7")
    ws, status, head = await RawWS.handshake(
        srv.port, headers={"Sec-WebSocket-Protocol": f"v1.events, base64url.bearer.{secret}"}
    )
    assert status == 101
    assert "sec-websocket-protocol" not in head.lower()
    assert secret not in head
    ws.close()


# == B. Bad input ======================================================================


async def test_B1_message_over_64KiB_closes_1009(srv: RunningServer) -> None:
    async with await WSClient.connect(srv.premium_url) as other:
        await other.subscribe("matches")
        async with websockets.connect(srv.ws_url, max_size=None, open_timeout=TIMEOUT) as ws:
            await ws.send("x" * (64 * 1024 + 1))
            code, _, _ = await closed_with(ws)
        assert code == 1009
        await bystander_receives(srv, other)


def _bomb(size: int = 64 * 1024 * 1024) -> bytes:
    """``size`` zero bytes as one permessage-deflate message (tail removed): 64 MiB
    deflate to ~64 KB."""
    bomb = zlib.compressobj(wbits=-15)
    return (bomb.compress(b"\x00" * size) + bomb.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def test_B2_deflate_bomb_closes_1009_while_inflating(srv: RunningServer) -> None:
    # Shipped settings: REALTIME_COMPRESSION=shared negotiates permessage-deflate. The
    # inflater is given the message size limit (64 KiB): it stops there and the
    # connection closes with 1009, having inflated at most 64 KiB of the 64 MiB.
    async with await WSClient.connect(srv.premium_url) as other:
        await other.subscribe("matches")
        ws, status, head = await RawWS.handshake(
            srv.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"}
        )
        assert status == 101
        assert "permessage-deflate; server_no_context_takeover" in head
        ws.send(0x1, _bomb()[:60_000], rsv1=True)
        code, reason, _ = await ws.until_close()
        assert code == 1009, reason
        ws.close()
        await bystander_receives(srv, other)


async def test_B2_fragmented_deflate_bomb_closes_1009(srv: RunningServer) -> None:
    # Each fragment is small; the size of the message inflated so far is what counts.
    ws, status, _ = await RawWS.handshake(
        srv.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"}
    )
    assert status == 101
    body = _bomb()
    # ~16 KiB inflated per 16-byte fragment: the fifth passes the 64 KiB limit. One
    # write, so nothing is left unread when the server closes (else a TCP reset may
    # overtake the close frame).
    frames = [ws.frame(0x1, body[:16], fin=False, rsv1=True)]
    frames += [ws.frame(0x0, body[i : i + 16], fin=False) for i in range(16, 16 * 5, 16)]
    ws.writer.write(b"".join(frames))
    code, reason, _ = await ws.until_close()
    assert code == 1009, reason
    ws.close()


async def test_B2_compression_off_never_negotiates_and_compressed_frames_close_1002() -> None:
    with running_server(compression="off") as off:
        ws, status, head = await RawWS.handshake(
            off.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"}
        )
        assert status == 101 and "sec-websocket-extensions" not in head.lower()
        # Without the extension the frame is refused before anything is inflated.
        ws.send(0x1, _bomb()[:60_000], rsv1=True)
        code, _, _ = await ws.until_close()
        assert code == 1002
        ws.close()


@pytest.mark.parametrize(
    ("fragments", "size"),
    [(100_000, 10), (5000, 10), (5000, 0)],
    ids=["1MiB-in-100k", "5000x10B-under-size-cap", "5000-empty"],
)
async def test_B3_too_many_fragments_close_1009(
    srv: RunningServer, fragments: int, size: int
) -> None:
    async with await WSClient.connect(srv.premium_url) as other:
        await other.subscribe("matches")
        ws, _, _ = await RawWS.handshake(srv.port)
        await ws.read_frame()  # connection_status
        ws.send(0x1, b"[" + b" " * max(size - 1, 0), fin=False)
        chunk = ws.frame(0x0, b" " * size, fin=False)
        sent = 1
        closing: tuple[int, bytes] | None = None
        while sent < fragments and closing is None:
            # In batches, looking for the server's close frame between them: writing on
            # after it would reset the connection and lose the frame.
            n = min(1000, fragments - sent)
            ws.writer.write(chunk * n)
            await ws.writer.drain()
            sent += n
            with contextlib.suppress(TimeoutError):
                closing = await ws.read_frame(0.05 * UNIT)
        if closing is None:
            code, reason, _ = await ws.until_close()
        else:
            assert closing[0] == 0x8
            code, reason = struct.unpack("!H", closing[1][:2])[0], closing[1][2:].decode()
        assert (code, reason) == (1009, "message has more than 4096 fragments")
        ws.close()
        await usable(other)
        await bystander_receives(srv, other)


async def test_B4_deep_nesting_is_invalid_json(srv: RunningServer) -> None:
    # Nesting 100,000 does not fit in 64 KiB (B1: 1009); 60,000 does.
    async with await WSClient.connect(srv.ws_url, tier=None) as c:
        await c.ws.send("[" * 60_000)
        reply = await c.wait_for(lambda m: m["event_type"] == "error")
        assert reply["data"]["code"] == "invalid_json"
        await c.ws.send('{"type":"subscribe","data":' + "[" * 2000 + "]" * 2000 + "}")
        reply = await c.wait_for(lambda m: m["event_type"] == "error")
        assert reply["data"]["code"] == "invalid_json"
        assert "depth" in reply["data"]["message"]
        await usable(c)


async def test_B5_huge_numbers_and_strings(srv: RunningServer) -> None:
    async with await WSClient.connect(srv.premium_url) as c:
        await c.ws.send(
            '{"type":"subscribe","data":{"subscription_type":"matches","filters":'
            '{"match_ids":[' + "9" * 5000 + "]}}}"
        )
        reply = await c.wait_for(lambda m: m["event_type"] == "error")
        assert reply["data"]["code"] == "invalid_json"
        reply = await c.request(
            "subscribe", {"subscription_type": "matches", "filters": {"match_ids": [2**60]}}
        )
        assert reply["data"]["code"] == "invalid_filter"
        assert reply["data"]["message"].startswith("filters.match_ids.0:")
        reply = await c.request(
            "subscribe", {"subscription_type": "matches", "filters": {"leagues": ["x" * 60_000]}}
        )
        assert reply["data"]["code"] == "invalid_filter"
        assert reply["data"]["message"].startswith("filters.leagues.0:")
        assert len(reply["data"]["message"]) < 500  # the value is not echoed back
        await usable(c)
    # A 1 MB string is over the message size: 1009 (B1).


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_B6_non_finite_numbers_are_refused(srv: RunningServer, number: str) -> None:
    async with await WSClient.connect(srv.ws_url, tier=None) as c:
        await c.ws.send(
            '{"type":"subscribe","data":{"subscription_type":"predictions",'
            '"filters":{"min_confidence":' + number + "}}}"
        )
        reply = await c.wait_for(lambda m: m["event_type"] == "error")
        assert reply["data"]["code"] == "invalid_json"
        await usable(c)


async def test_B7_lone_surrogate_is_refused_with_a_utf8_reply(srv: RunningServer) -> None:
    async with websockets.connect(srv.ws_url, open_timeout=TIMEOUT) as ws:
        await ws.recv()
        await ws.send(
            '{"type":"subscribe","data":{"subscription_type":"matches",'
            '"filters":{"leagues":["\\ud800"]}}}'
        )
        raw = await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)
        reply = orjson.loads(raw.decode("utf-8"))  # strict UTF-8
        assert reply["data"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "publish"}, "unknown_type"),
        ({"type": {"a": 1}}, "invalid_message"),
        ({"type": ["subscribe"]}, "invalid_message"),
        ({"data": {}}, "invalid_message"),
        ([1, 2], "invalid_message"),
        ({"type": "subscribe", "data": {}}, "invalid_message"),
        ({"type": "subscribe", "data": {"subscription_type": "odds*"}}, "unknown_subscription_type"),
        ({"type": "subscribe", "data": {"subscription_type": 5}}, "invalid_message"),
        ({"type": "subscribe", "data": {"subscription_type": "odds", "filters": []}}, "invalid_filter"),
        ({"type": "subscribe", "data": {"subscription_type": "odds", "filters": {"x": 1}}}, "invalid_filter"),
        ({"type": "subscribe", "data": {"subscription_type": "odds", "filters": {"match_ids": ["1"]}}}, "invalid_filter"),
        ({"type": "subscribe", "data": {"subscription_type": "odds", "filters": {"match_ids": []}}}, "invalid_filter"),
        ({"type": "subscribe", "data": {"subscription_type": "odds", "filters": {"leagues": ["a\u0000b"]}}}, "invalid_filter"),
        ({"type": "subscribe", "data": {"subscription_type": "odds", "filters": {"min_confidence": "0.5"}}}, "invalid_filter"),
        ({"type": "subscribe", "data": {"subscription_type": "odds", "snapshot": "yes"}}, "invalid_message"),
        ({"type": "subscribe", "data": {"subscription_type": "odds", "since": []}}, "invalid_since"),
        ({"type": "unsubscribe", "data": {}}, "invalid_message"),
        ({"type": "unsubscribe", "data": {"subscription_id": "sub_999"}}, "not_found"),
        ({"type": "join", "data": {"room": "*"}}, "invalid_message"),
        ({"type": "join", "data": {"room": "a/../b"}}, "invalid_message"),
        ({"type": "join", "data": {"room": "r" * 10_000}}, "invalid_message"),
        ({"type": "join", "data": {"room": "a\r\nb\x1b[31m"}}, "invalid_message"),
        ({"type": "join"}, "invalid_message"),
        ({"type": "leave", "data": {"room": "never-joined"}}, "not_found"),
        ({"type": "heartbeat", "id": {"nested": 1}}, "invalid_message"),
        ({"type": "heartbeat", "id": 2**60}, "invalid_message"),
        ({"type": "heartbeat", "data": "x"}, "invalid_message"),
        ({"type": "auth", "data": {"token": 5}}, "invalid_message"),
        ({"type": "auth", "data": {"token": "a.b.c"}}, "unauthorized"),
    ],
)  # fmt: skip
async def test_B8_wrong_types_and_unknown_fields_get_documented_errors(
    srv: RunningServer, message: Any, code: str
) -> None:
    assert code in ERROR_CODES
    async with await WSClient.connect(srv.premium_url) as c:
        await c.ws.send(orjson.dumps(message).decode())
        reply = await c.wait_for(lambda m: m["event_type"] == "error")
        assert reply["data"]["code"] == code, reply
        await usable(c)


async def test_B9_binary_frame_closes_1003(srv: RunningServer) -> None:
    async with websockets.connect(srv.ws_url, open_timeout=TIMEOUT) as ws:
        await ws.send(b'{"type":"heartbeat"}')
        code, reason, _ = await closed_with(ws)
    assert (code, reason) == (1003, "binary frames are not supported")


async def test_B10_subscription_limit(srv: RunningServer) -> None:
    limit = srv.settings.max_subscriptions_per_connection
    async with await WSClient.connect(srv.premium_url) as c:
        for i in range(limit):
            await c.subscribe("matches", match_ids=[i])
        reply = await c.request("subscribe", {"subscription_type": "matches"})
        assert reply["data"]["code"] == "limit_exceeded"
        srv.publish({"event_type": "match_started", "data": {**MATCH, "match_id": 3}})
        assert (await c.events(1))[0]["data"]["match_id"] == 3


async def test_B11_flood_is_rate_limited_then_closed_1008(srv: RunningServer) -> None:
    s = srv.settings
    async with await WSClient.connect(srv.premium_url) as other:
        await other.subscribe("matches")
        async with websockets.connect(srv.ws_url, open_timeout=TIMEOUT) as ws:
            await ws.recv()
            msg = orjson.dumps({"type": "subscribe", "data": {"subscription_type": "matches"}})
            unsub = orjson.dumps({"type": "unsubscribe", "data": {"subscription_type": "matches"}})
            with contextlib.suppress(websockets.ConnectionClosed):
                for i in range(1000):
                    await ws.send((msg if i % 2 == 0 else unsub).decode())
            code, reason, got = await closed_with(ws)
        assert (code, reason) == (1008, "rate limit exceeded")
        limited = [
            m for m in got if m["event_type"] == "error" and m["data"]["code"] == "rate_limited"
        ]
        answered = [m for m in got if m["event_type"] == "message_ack"]
        assert len(limited) == s.rate_limit_violations
        # The burst passes; a few more tokens may have refilled during the flood.
        assert s.rate_limit_burst <= len(answered) <= s.rate_limit_burst + 20
        await bystander_receives(srv, other)


# == S. Auth and security =============================================================


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://app.example.com.evil.com",
        "null",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://APP.example.com",
        "https://app.example.com/",
    ],
)
async def test_S1_S2_foreign_origins_get_403_before_upgrade(
    srv: RunningServer, origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "football_realtime.security")
    tok = token("s1")
    ws, status, head = await RawWS.handshake(
        srv.port, f"/realtime/ws?token={tok}", headers={"Origin": origin}
    )
    assert status == 403
    assert "upgrade: websocket" not in head.lower()
    ws.close()
    logged = [r.getMessage() for r in caplog.records]
    assert any(repr(origin) in line and "127.0.0.1" in line for line in logged), logged
    assert not any(tok in line for line in logged)


async def test_S2_exact_origin_and_no_origin_are_allowed(srv: RunningServer) -> None:
    for headers in ({"Origin": ORIGIN}, {}):
        ws, status, _ = await RawWS.handshake(srv.port, headers=headers)
        assert status == 101
        ws.close()


async def test_S3_no_origin_no_token_closes_after_auth_deadline() -> None:
    with running_server(require_auth=True, auth_timeout=0.5 * UNIT) as s:
        ws, status, _ = await RawWS.handshake(s.port)
        assert status == 101
        code, reason, before = await ws.until_close()
        assert (code, reason, before) == (4505, "no auth message within 0.5 s", [])
        ws.close()


async def test_S4_S14_tokens_redacted_and_control_characters_escaped_in_logs() -> None:
    tok = token("s4")
    proc = start_serve_process(env={"REALTIME_LOG_LEVEL": "info"})
    try:
        url = f"{proc.ws_url}?token={tok}"
        async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
            assert orjson.loads(await ws.recv())["data"]["user_id"] == "s4"
        r = await asyncio.to_thread(
            httpx.get,
            f"{proc.http_url}/realtime/health?access_token={tok}&x=%1b%5b31m%0d%0aFAKE",
            headers={"Authorization": f"Bearer {tok}"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 200
        async with websockets.connect(
            f"{proc.ws_url}?token=not-a-valid-token", open_timeout=TIMEOUT
        ) as ws:
            await closed_with(ws)
        _, status, _ = await RawWS.handshake(
            proc.port, f"/realtime/ws/%1b%5b2J%0d%0aFAKE?token={tok}"
        )
        assert status == 403  # no such route
        # Raw control characters in a header are refused by the HTTP parser itself.
        answer = await raw_http(
            proc.port, b"GET /realtime/health HTTP/1.1\r\nHost: x\r\nUser-Agent: a\x1b[2Jb\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 400 ")
    finally:
        proc.stop()
    out = proc.output()
    assert tok not in out and "not-a-valid-token" not in out
    assert out.count("token=[REDACTED]") >= 2, out
    # Our guarantee, whatever a library's spelling of an escape (uvicorn quotes paths,
    # in upper or lower case by version; our filter escapes what gets through raw): the
    # hostile path is logged, escaped, and never as a control character or a forged line.
    fake_lines = [line for line in out.splitlines() if "FAKE" in line]
    assert any("/realtime/ws/" in line for line in fake_lines), out
    assert all(not line.lstrip().startswith("FAKE") for line in fake_lines), out
    assert all(
        "%1b%5b2j" in line.lower() or "\\x1b" in line for line in fake_lines if "/ws/" in line
    ), out
    assert "\x1b" not in out and "\nFAKE" not in out and "\rFAKE" not in out


def test_S14_log_filter_escapes_control_characters_and_redacts() -> None:
    record = logging.LogRecord(
        "football_realtime", logging.INFO, __file__, 1,
        "refused %s from %s (Authorization: Bearer abc.def.ghi)",
        ("Origin 'a\x1b[31m\r\nFAKE'", "/ws?user_id=u&token=abc.def.ghi"), None,
    )  # fmt: skip
    assert RedactingFilter().filter(record)
    line = record.getMessage()
    assert line == (
        "refused Origin 'a\\x1b[31m\\r\\nFAKE' from /ws?user_id=u&token=[REDACTED] "
        "(Authorization: Bearer [REDACTED])"
    )


def _rsa() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rsa_server() -> Iterator[tuple[RunningServer, rsa.RSAPrivateKey, str]]:
    key, pem = _rsa()
    with running_server(
        jwt_public_key=pem,
        jwt_algorithms=["HS256", "RS256"],
        jwt_audience="football",
        jwt_issuer="issuer",
        jwt_leeway=30,
    ) as s:
        yield s, key, pem


def _s5_s6_tokens(key: rsa.RSAPrivateKey, pem: str) -> dict[str, tuple[str, int, str | None]]:
    now = int(time.time())
    ok = {"user_id": "s", "tier": "premium", "aud": "football", "iss": "issuer"}
    hs = lambda **c: jwt.encode({**ok, **c}, JWT_SECRET, algorithm="HS256")  # noqa: E731
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({**ok, "exp": now + 60}).encode())
    confused = f"{head}.{body}." + _b64(
        hmac.new(pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    )
    none = _b64(b'{"alg":"none","typ":"JWT"}') + "." + body + "."
    return {
        # case: (token, close code or 0 when accepted, reason)
        "S5-alg-none": (none, 4501, "token algorithm 'none' is not accepted (accepted: HS256, RS256)"),
        "S5-empty-signature": (hs(exp=now + 60).rsplit(".", 1)[0] + ".", 4501, "invalid token signature"),
        "S5-hs256-with-public-pem": (confused, 4501, "invalid token signature"),
        "S5-rs256-valid": (jwt.encode({**ok, "exp": now + 60}, key, algorithm="RS256"), 0, None),
        "S6-no-exp": (hs(), 4501, "token is missing the exp claim"),
        "S6-exp-120s-ago": (hs(exp=now - 120), 4502, "token expired"),
        "S6-exp-20s-ago-within-leeway": (hs(exp=now - 20), 0, None),
        "S6-nbf-in-120s": (hs(exp=now + 600, nbf=now + 120), 4501, "token is not yet valid (nbf/iat in the future)"),
        "S6-wrong-aud": (hs(exp=now + 60, aud="other"), 4501, "token audience is not accepted"),
        "S6-issuer-substring": (hs(exp=now + 60, iss="__issuer__"), 4501, "token issuer is not accepted"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        "S5-alg-none",
        "S5-empty-signature",
        "S5-hs256-with-public-pem",
        "S5-rs256-valid",
        "S6-no-exp",
        "S6-exp-120s-ago",
        "S6-exp-20s-ago-within-leeway",
        "S6-nbf-in-120s",
        "S6-wrong-aud",
        "S6-issuer-substring",
    ],
)
async def test_S5_S6_tokens(rsa_server: Any, case: str) -> None:
    s, key, pem = rsa_server
    tok, code, reason = _s5_s6_tokens(key, pem)[case]
    async with websockets.connect(s.url(token=tok), open_timeout=TIMEOUT) as ws:
        if code == 0:
            hello = orjson.loads(await ws.recv())
            assert hello["data"]["user_id"] == "s" and hello["data"]["authenticated"]
            return
        got = await closed_with(ws)
    assert got[:2] == (code, reason)
    assert [m["data"]["code"] for m in got[2]] == ["unauthorized"]


async def test_S7_expiry_warns_then_closes_4502_and_sends_nothing_after() -> None:
    with running_server(jwt_leeway=0, token_expiry_warning=0.5 * UNIT) as s:
        async with websockets.connect(s.url(token=token("s7", ttl=1)), open_timeout=TIMEOUT) as ws:
            code, reason, got = await closed_with(ws)
        assert (code, reason) == (4502, "token expired")
        assert [m["data"]["status"] for m in got] == ["connected", "warning"]
        assert got[1]["data"]["reason"] == "token_expiring"
        assert s.call(lambda: len(s.realtime.hub.connections)) == 0


async def test_S8_free_tier_cannot_subscribe_to_odds_and_gets_none(srv: RunningServer) -> None:
    async with await WSClient.connect(srv.url(token=token("s8", "free"))) as c:
        reply = await c.request("subscribe", {"subscription_type": "odds"})
        assert reply["data"]["code"] == "forbidden"
        reply = await c.request("subscribe", {"filters": {"event_types": ["odds_updated"]}})
        assert reply["data"]["code"] == "forbidden"
        await c.subscribe("matches")  # narrowed to match_started
        odds = {
            "match_id": 7,
            "bookmaker": "b",
            "home_odds": 2.0,
            "draw_odds": 3.0,
            "away_odds": 4.0,
        }
        srv.publish({"event_type": "odds_updated", "data": odds})
        srv.publish(
            {
                "event_type": "match_score_changed",
                "data": {"match_id": 7, "home_score": 1, "away_score": 0},
            }
        )
        await barrier(c)
        await c.expect_silence()


def test_S9_broadcast_auth_size_and_syntax(srv: RunningServer) -> None:
    before = srv.realtime.stats.events_published
    url = f"{srv.http_url}/realtime/broadcast"
    body = {"event_type": "match_started", "data": MATCH}
    assert post_broadcast(srv, body, headers={}).status_code == 401
    user = post_broadcast(srv, body, headers={"Authorization": f"Bearer {token('u')}"})
    assert user.status_code == 403
    big = {"event_type": "system_alert", "data": {"x": "y" * (1024 * 1024)}}
    r = post_broadcast(srv, big)
    assert (r.status_code, r.json()["detail"]) == (413, "request body larger than 65536 bytes")
    r = httpx.post(
        url,
        content=b'{"event_type": "match_started", "data": {',
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 422
    assert srv.realtime.stats.events_published == before


async def test_S11_connection_limits_per_user_and_per_address() -> None:
    with running_server(max_connections_per_user=2, max_connections_per_ip=4) as s:
        a1 = await WSClient.connect(s.url(token=token("same")))
        a2 = await WSClient.connect(s.url(token=token("same")))
        async with websockets.connect(s.url(token=token("same")), open_timeout=TIMEOUT) as ws:
            code, reason, _ = await closed_with(ws)
        assert (code, reason) == (4504, "connection limit: at most 2 connections per user")
        others = [await WSClient.connect(s.ws_url, tier=None) for _ in range(2)]
        async with websockets.connect(s.ws_url, open_timeout=TIMEOUT) as ws:
            code, reason, got = await closed_with(ws)
        assert (code, reason) == (
            4504,
            "connection limit: at most 4 connections per client address",
        )
        assert got[0]["data"]["code"] == "limit_exceeded"
        await a1.close()
        deadline = time.monotonic() + TIMEOUT
        while s.call(lambda: len(s.realtime.hub.connections)) > 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        async with await WSClient.connect(s.url(token=token("same"))) as again:
            await usable(again)
        for c in (a2, *others):
            await usable(c)
            await c.close()


async def test_S11_instance_capacity_and_room_limit() -> None:
    with running_server(max_connections=2, max_rooms_per_connection=1) as s:
        async with (
            await WSClient.connect(s.url(user_id="a")) as a,
            await WSClient.connect(s.url(user_id="b")) as b,
        ):
            async with websockets.connect(s.ws_url, open_timeout=TIMEOUT) as ws:
                code, reason, _ = await closed_with(ws)
            assert (code, reason) == (1013, "server at connection capacity")
            assert (await a.request("join", {"room": "r1"}))["event_type"] == "message_ack"
            reply = await a.request("join", {"room": "r2"})
            assert reply["data"]["code"] == "limit_exceeded"
            await usable(b)


async def test_S12_slowloris_and_idle_sockets_are_closed() -> None:
    with running_server(handshake_timeout=0.5 * UNIT) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"GET /realtime/ws HTTP/1.1\r\nHost: x\r\n")
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", s.port)
        started = time.monotonic()
        for header in (b"U", b"p", b"g"):  # one byte at a time, slower than the deadline allows
            writer.write(header)
            await asyncio.sleep(0.1 * UNIT)
        async with await WSClient.connect(s.ws_url) as real:  # real handshakes still served
            await usable(real)
        answer = await asyncio.wait_for(reader.read(1000), TIMEOUT)
        assert answer.startswith(b"HTTP/1.1 408 ")
        idle_answer = await asyncio.wait_for(idle_r.read(1000), TIMEOUT)
        assert idle_answer.startswith(b"HTTP/1.1 408 ")
        assert 0.4 * UNIT <= time.monotonic() - started < TIMEOUT
        writer.close()
        idle_w.close()


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("".join(f"X-H{i}: v\r\n" for i in range(2000)), 431),
        ("X-Big: " + "a" * 100_000 + "\r\n", 431),
        ("Sec-WebSocket-Protocol: b" + " " * 32000 + "x\r\n", 431),
        ("Transfer-Encoding: chunked\r\n", 400),
    ],
    ids=["2000-headers", "100KB-header", "32000-subprotocol", "chunked-upgrade"],
)
async def test_S13_oversized_and_smuggling_handshakes(
    srv: RunningServer, extra: str, status: int
) -> None:
    request = (
        "GET /realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + extra
        + "\r\n"
    )
    started = time.monotonic()
    answer = await raw_http(srv.port, request.encode())
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert time.monotonic() - started < 1.0 * UNIT
    # Headers beyond 64 KiB in total are refused by the HTTP layer itself.
    answer = await raw_http(srv.port, b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 20_000)
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_S15_ping_flood_is_closed_1008_others_unaffected(srv: RunningServer) -> None:
    async with await WSClient.connect(srv.premium_url) as other:
        await other.subscribe("matches")
        ws, _, _ = await RawWS.handshake(srv.port)
        await ws.read_frame()
        pongs = 0
        code: int | None = None
        for _ in range(200):  # up to 10,000 pings, 50 at a time, as fast as they go
            ws.writer.write(ws.frame(0x9, b"flood") * 50)
            with contextlib.suppress(TimeoutError):
                while True:
                    op, data = await ws.read_frame(0.05 * UNIT)
                    if op == 0x8:
                        code, reason = struct.unpack("!H", data[:2])[0], data[2:].decode()
                        break
                    pongs += op == 0xA
            if code is not None:
                break
        assert (code, reason) == (1008, "too many pings")
        # At most the burst is answered (a 50-ping read over it gets none), then the close.
        assert pongs <= 20
        ws.close()
        await bystander_receives(srv, other)


# == Fuzz: the parser and the filters raise nothing but ProtocolError ===============

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
field_values = json_values | st.sampled_from(
    ["predictions", "matches", "odds", "system_alerts", "analytics", "prediction_created", "英超"]
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["subscribe", "unsubscribe", "heartbeat", "get_stats", "join", "leave", "auth"]) | json_values,
        "id": json_values,
        "data": st.dictionaries(
            st.sampled_from(["subscription_type", "filters", "since", "snapshot", "subscription_id", "room", "token"]) | st.text(max_size=8),
            field_values
            | st.dictionaries(
                st.sampled_from(["match_ids", "leagues", "min_confidence", "event_types"]) | st.text(max_size=8),
                field_values | st.lists(field_values, max_size=5),
                max_size=4,
            ),
            max_size=5,
        )
        | json_values,
    },
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msg=messages,
    attrs=st.dictionaries(st.sampled_from(["match_id", "league", "confidence"]), json_values),
)
def test_fuzz_parser_and_filters_raise_only_protocol_errors(msg: dict, attrs: dict) -> None:
    text = json.dumps(msg, allow_nan=True)
    try:
        parsed = parse_client_message(text)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        return
    flt = getattr(parsed, "filters", None)
    if flt is not None:
        from football_realtime.core.events import EventType

        sub = Subscription("s", None, None, frozenset(EventType), flt)
        for et in (EventType.PREDICTION_CREATED, EventType.ODDS_UPDATED):
            sub.matches(EventAttributes.of(et, attrs))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_fuzz_parser_on_arbitrary_text(raw: bytes | str) -> None:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        parse_client_message(text)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES


# == After the catalogue ===============================================================


async def test_zz_server_still_serves_and_nothing_leaked(srv: RunningServer) -> None:
    rt = srv.realtime
    deadline = time.monotonic() + TIMEOUT
    while srv.call(lambda: len(rt.hub.connections)):
        assert time.monotonic() < deadline, srv.call(lambda: list(rt.hub.connections))
        await asyncio.sleep(0.02)
    async with await WSClient.connect(srv.premium_url) as fresh:
        await fresh.subscribe("matches")
        srv.publish({"event_type": "match_started", "data": MATCH})
        assert (await fresh.events(1))[0]["data"] == MATCH
    while srv.call(lambda: len(rt.hub.connections)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

    def state() -> dict[str, int]:
        assert srv.server is not None
        return {
            "connections": len(rt.hub.connections),
            "subscriptions": len(rt.hub.index),
            "users": len(rt.hub.user_connections),
            "rooms": len(rt.hub.rooms),
            "addresses": len(rt.admission.ip_connections),
            "sockets": len(srv.server.server_state.connections),
            "tasks": len(srv.server.server_state.tasks),
            "websockets": len(srv.ws_layer.connections),
        }

    while any(srv.call(state)[k] for k in ("sockets", "tasks", "websockets")):
        assert time.monotonic() < deadline, srv.call(state)
        await asyncio.sleep(0.02)
    assert srv.call(state) == dict.fromkeys(
        (
            "connections",
            "subscriptions",
            "users",
            "rooms",
            "addresses",
            "sockets",
            "tasks",
            "websockets",
        ),
        0,
    )
    stats = rt.stats
    assert stats.connections_opened == stats.connections_closed
    assert stats.errors_by_code["internal_error"] == 0
    assert stats.closed_by_code[1011] == 0
