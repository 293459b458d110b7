"""permessage-deflate on our WebSocket layer, with real clients on real sockets
(docs/protocol.md "Compression", docs/security.md B2).

The server answers an offer with ``server_no_context_takeover`` and
``client_no_context_takeover`` (and ``client_max_window_bits=12`` when the client lets
it choose); events go out as one compressed frame per event and view, shared by every
connection that negotiated it."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from football_realtime.server.websocket_layer import shared_frames_allowed

from ..support import TIMEOUT, RunningServer, WSClient, running_server, token

#: The answer to a client that offers ``permessage-deflate; client_max_window_bits``
#: (websockets, Node ws and browsers do), as docs/protocol.md gives it.
NEGOTIATED = (
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
    "client_max_window_bits=12"
)


DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_documented_answer_is_the_one_tested() -> None:
    assert f"Sec-WebSocket-Extensions: {NEGOTIATED}" in (DOCS / "protocol.md").read_text()


def test_which_answers_allow_the_shared_frames() -> None:
    assert shared_frames_allowed(NEGOTIATED)
    assert shared_frames_allowed("permessage-deflate; server_no_context_takeover")
    assert shared_frames_allowed(
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=15"
    )
    assert not shared_frames_allowed(
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
    )
    assert not shared_frames_allowed("permessage-deflate")  # context takeover
    assert not shared_frames_allowed(None)
    assert not shared_frames_allowed("x-other; server_no_context_takeover")


def goal(match_id: int, n: int) -> dict[str, Any]:
    return {
        "event_type": "match_score_changed",
        "data": {
            "match_id": match_id,
            "home_team": "曼联",
            "away_team": "切尔西",
            "league": "英超",
            "home_score": n,
            "away_score": 0,
            "minute": 10 + n,
        },
    }


def extensions_of(c: WSClient) -> str | None:
    assert c.ws.response is not None
    value: str | None = c.ws.response.headers.get("Sec-WebSocket-Extensions")
    return value


async def publish(srv: RunningServer, events: list[dict[str, Any]]) -> None:
    async def run() -> None:
        for ev in events:
            await srv.realtime.publish(ev)

    await asyncio.to_thread(srv.run, run())


async def test_compressed_and_plain_clients_receive_the_same_events(
    any_server: RunningServer,
) -> None:
    srv = any_server
    async with (
        await WSClient.connect(srv.premium_url, compression="deflate") as z,
        await WSClient.connect(srv.premium_url, compression=None) as plain,
    ):
        assert extensions_of(z) == NEGOTIATED
        assert extensions_of(plain) is None
        await z.subscribe("matches")  # a compressed client message, inflated by the server
        await plain.subscribe("matches")
        await publish(srv, [goal(5, n) for n in range(20)])
        got_z, got_plain = await z.events(20), await plain.events(20)
        assert got_z == got_plain
        assert [e["data"]["home_score"] for e in got_z] == list(range(20))
    if srv.fast:
        deflate = srv.realtime.deflate
        assert deflate is not None and deflate.compressed >= 20


class RawClient:
    """A client that sees frames as sent: RSV1 and all."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, extensions: str | None, path: str) -> tuple[RawClient, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version: 13",
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert b" 101 " in head.split(b"\r\n", 1)[0] + b" ", head
        return cls(reader, writer), head.decode("latin-1")

    def send(
        self, payload: bytes, *, rsv1: bool = False, opcode: int = 0x1, fin: bool = True
    ) -> None:
        key = os.urandom(4)
        n = len(payload)
        b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        if n < 126:
            head = bytes((b0, 0x80 | n))
        elif n < 65536:
            head = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", b0, 0x80 | 127, n)
        self.writer.write(head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))

    async def frame(self) -> tuple[int, bool, bytes]:
        """(opcode, compressed, payload inflated)."""
        head = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        n = head[1] & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        data = await self.reader.readexactly(n)
        compressed = bool(head[0] & 0x40)
        if compressed:
            data = zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")
        return head[0] & 0x0F, compressed, data

    async def message(self) -> tuple[bool, dict[str, Any]]:
        op, compressed, data = await self.frame()
        assert op == 0x1, (op, data)
        msg: dict[str, Any] = orjson.loads(data)
        return compressed, msg

    async def until(self, event_type: str) -> tuple[bool, dict[str, Any]]:
        """The next message of ``event_type`` (others skipped)."""
        while True:
            compressed, msg = await self.message()
            if msg["event_type"] == event_type:
                return compressed, msg

    async def close_code(self) -> int | None:
        try:
            while True:
                op, _, data = await self.frame()
                if op == 0x8:
                    return int(struct.unpack("!H", data[:2])[0]) if len(data) >= 2 else None
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def close(self) -> None:
        self.writer.close()


def deflated(payload: bytes, wbits: int = 15) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    return (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def test_events_are_compressed_frames_and_small_replies_plain(server: RunningServer) -> None:
    raw, head = await RawClient.open(
        server.port, "permessage-deflate; client_max_window_bits", f"/realtime/ws?token={token()}"
    )
    try:
        assert f"Sec-WebSocket-Extensions: {NEGOTIATED}" in head
        compressed, status = await raw.message()
        assert status["event_type"] == "connection_status" and compressed
        raw.send(
            deflated(b'{"type":"subscribe","id":1,"data":{"subscription_type":"matches"}}'),
            rsv1=True,
        )
        _, ack = await raw.until("message_ack")
        assert ack["data"]["id"] == 1
        raw.send(b'{"type":"heartbeat","id":2}')  # uncompressed messages are fine too
        _, ack = await raw.until("message_ack")
        assert ack["data"]["id"] == 2
        await publish(server, [goal(6, 1)])
        compressed, ev = await raw.until("match_score_changed")
        assert compressed and ev["data"]["match_id"] == 6
    finally:
        raw.close()


async def test_a_smaller_server_window_gets_plain_frames(server: RunningServer) -> None:
    # Our shared frames use the default 15-bit window: a client that asks for less
    # negotiates (its own messages are inflated) but receives uncompressed frames.
    raw, head = await RawClient.open(
        server.port,
        "permessage-deflate; server_max_window_bits=10",
        f"/realtime/ws?token={token()}",
    )
    try:
        assert "server_max_window_bits=10" in head
        compressed, status = await raw.message()
        assert status["event_type"] == "connection_status" and not compressed
        raw.send(
            deflated(b'{"type":"subscribe","id":1,"data":{"subscription_type":"matches"}}'),
            rsv1=True,
        )
        compressed, _ = await raw.until("message_ack")
        assert not compressed
        await publish(server, [goal(7, 1)])
        compressed, ev = await raw.until("match_score_changed")
        assert not compressed and ev["data"]["match_id"] == 7
    finally:
        raw.close()


async def test_an_offer_the_server_cannot_take_is_declined_and_the_connection_works(
    server: RunningServer,
) -> None:
    # server_max_window_bits=8 is unsupported by zlib: the extension is not negotiated.
    raw, head = await RawClient.open(
        server.port, "permessage-deflate; server_max_window_bits=8", f"/realtime/ws?token={token()}"
    )
    try:
        assert "sec-websocket-extensions" not in head.lower()
        compressed, status = await raw.message()
        assert status["event_type"] == "connection_status" and not compressed
    finally:
        raw.close()


async def test_a_message_wider_than_the_negotiated_client_window_closes_1002(
    server: RunningServer,
) -> None:
    raw, head = await RawClient.open(
        server.port, "permessage-deflate; client_max_window_bits=15", "/realtime/ws"
    )
    try:
        assert "client_max_window_bits=12" in head  # lowered to the server's bound
        await raw.message()
        # A 5 KB block repeated 6 KB later, in a second fragment: a 15-bit compressor
        # refers back past the 4 KiB window the client agreed to. (Within one frame,
        # zlib resolves such a reference from the output it already holds; memory
        # stays bounded by the window and the message size limit either way.)
        rng = random.Random(3)
        block = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(5000))
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        first = c.compress(b'{"type":"heartbeat","pad":"' + block + b"-" * 1000)
        first += c.flush(zlib.Z_SYNC_FLUSH)
        second = (c.compress(block + b'"}') + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
        raw.send(first, rsv1=True, fin=False)
        raw.send(second, opcode=0x0)
        assert await raw.close_code() == 1002
    finally:
        raw.close()


async def test_the_same_message_within_the_window_is_accepted(server: RunningServer) -> None:
    raw, _ = await RawClient.open(
        server.port, "permessage-deflate; client_max_window_bits=15", "/realtime/ws"
    )
    try:
        await raw.message()
        body = b'{"type":"heartbeat","id":1,"pad":"' + b"abc" * 3000 + b'"}'
        raw.send(deflated(body, wbits=12), rsv1=True)
        _, ack = await raw.message()
        assert ack["event_type"] == "message_ack"
    finally:
        raw.close()


async def test_compression_off_never_negotiates() -> None:
    with running_server(compression="off") as srv:
        async with await WSClient.connect(srv.premium_url, compression="deflate") as c:
            assert extensions_of(c) is None
            await c.subscribe("matches")
            await publish(srv, [goal(8, 1)])
            (ev,) = await c.events(1)
            assert ev["data"]["match_id"] == 8
        assert srv.realtime.deflate is None


@pytest.mark.parametrize("window", [9, 12])
async def test_websockets_clients_with_a_window_limit_of_their_own_work(
    server: RunningServer, window: int
) -> None:
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=window)
    async with websockets.connect(
        server.premium_url, extensions=[factory], compression=None, open_timeout=TIMEOUT
    ) as ws:
        c = WSClient(ws)
        assert extensions_of(c) == NEGOTIATED.replace("=12", f"={min(window, 12)}")
        await c.subscribe("matches")
        await publish(server, [goal(9, 1)])
        (ev,) = await c.events(1)
        assert ev["data"]["match_id"] == 9


async def test_messages_under_the_threshold_go_plain_on_a_compressed_connection() -> None:
    with running_server(compression_min_bytes=100_000) as srv:
        raw, head = await RawClient.open(
            srv.port, "permessage-deflate", f"/realtime/ws?token={token()}"
        )
        try:
            assert "permessage-deflate; server_no_context_takeover" in head
            compressed, _ = await raw.until("connection_status")
            assert not compressed
            raw.send(b'{"type":"subscribe","id":1,"data":{"subscription_type":"matches"}}')
            await raw.until("message_ack")
            await publish(srv, [goal(10, 1)])
            compressed, ev = await raw.until("match_score_changed")
            assert not compressed and ev["data"]["match_id"] == 10
        finally:
            raw.close()
