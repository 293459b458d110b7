"""The WebSocket handshake on our layer: the upgrade request uvicorn hands over is read
with one split when it is a plain GET within websockets' limits (no run of websockets'
request parser); a request websockets' parser would treat differently is left to
that parser (same answers as websockets gives)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from football_realtime.server import websocket_protocol
from football_realtime.server.websocket_protocol import WebSocketProtocol

from .support import TIMEOUT, RunningServer, running_server, token

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

seen: list[tuple[Any, Any, Any]] = []


@pytest.fixture
def spied() -> Iterator[tuple[RunningServer, list[bool]]]:
    """A server whose WebSocket layer records whether its own reading of the request
    took it (True) or left it to websockets' parser (False)."""
    calls: list[bool] = []
    seen.clear()
    parse = websocket_protocol._parse_plain_request
    handshake = WebSocketProtocol.handshake

    def parse_spy(data: bytes) -> Any:
        result = parse(data)
        calls.append(result is not None)
        return result

    def handshake_spy(self: WebSocketProtocol, data: bytes) -> None:
        handshake(self, data)
        scope = self.scope or {}
        seen.append((scope.get("scheme"), self.client, self.server))

    mp = pytest.MonkeyPatch()
    mp.setattr(websocket_protocol, "_parse_plain_request", parse_spy)
    mp.setattr(WebSocketProtocol, "handshake", handshake_spy)
    try:
        with running_server() as srv:
            yield srv, calls
    finally:
        mp.undo()


async def _handshake(
    port: int, target: str, extra: list[tuple[str, bytes]]
) -> tuple[bytes, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {target} HTTP/1.1".encode(),
            f"Host: 127.0.0.1:{port}".encode(),
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}".encode(),
            b"Sec-WebSocket-Version: 13",
            *(name.encode() + b": " + value for name, value in extra),
        ]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        expected = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest())
        assert expected in head
        _, b1 = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        first = orjson.loads(await asyncio.wait_for(reader.readexactly(n), TIMEOUT))
        return head, first
    finally:
        writer.close()


async def test_a_plain_upgrade_is_handed_over_parsed(
    spied: tuple[RunningServer, list[bool]],
) -> None:
    srv, calls = spied
    league = urllib.parse.quote("英超")
    target = f"/realtime/ws/matches?leagues={league}&session_id=s-1"
    head, first = await _handshake(
        srv.port,
        target,
        [
            ("Authorization", f"Bearer {token('hs-user')}".encode()),
            ("X-Team", "Bayern M\xfcnchen".encode("latin-1")),  # obs-text, kept as bytes
        ],
    )
    assert head.startswith(b"HTTP/1.1 101 ")
    assert calls == [True]
    # The addresses are read from the socket; the host string is shared.
    scheme, client, server = seen[0]
    assert (scheme, client[0], server) == ("ws", "127.0.0.1", ("127.0.0.1", srv.port))
    data = first["data"]
    assert (data["status"], data["user_id"], data["session_id"]) == ("connected", "hs-user", "s-1")
    assert data["subscriptions"][0]["filters"]["leagues"] == ["英超"]


async def test_a_request_with_a_body_header_is_left_to_websockets_parser(
    spied: tuple[RunningServer, list[bool]],
) -> None:
    srv, calls = spied
    # websockets tolerates "Content-Length: 0" on an upgrade; our reading leaves body
    # headers to its parser.
    head, first = await _handshake(
        srv.port,
        "/realtime/ws?user_id=plain",
        [("Authorization", f"Bearer {token('plain')}".encode()), ("Content-Length", b"0")],
    )
    assert head.startswith(b"HTTP/1.1 101 ")
    assert calls == [False]
    assert first["data"]["user_id"] == "plain"
