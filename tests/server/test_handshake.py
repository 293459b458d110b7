"""The WebSocket handshake on our layer: uvicorn's HTTP protocol hands the upgrade
over (its request re-serialised), websockets' sans-I/O protocol reads and checks it,
and uvicorn's HTTP protocol is done with the connection (its connection_lost runs, so
nothing of it is left for the garbage collector)."""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from football_realtime.server.websocket_protocol import WebSocketProtocol

from ..support import TIMEOUT, RunningServer, running_server, token

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

seen: list[tuple[Any, Any, Any]] = []


@pytest.fixture
def spied() -> Iterator[RunningServer]:
    """A server whose WebSocket layer records the addresses of each handshake."""
    seen.clear()
    handshake = WebSocketProtocol.handshake

    def handshake_spy(self: WebSocketProtocol, data: bytes) -> None:
        handshake(self, data)
        scope = self.scope or {}
        seen.append((scope.get("scheme"), self.client, self.server))

    mp = pytest.MonkeyPatch()
    mp.setattr(WebSocketProtocol, "handshake", handshake_spy)
    try:
        with running_server() as srv:
            yield srv
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


async def test_a_plain_upgrade_is_handed_over(spied: RunningServer) -> None:
    srv = spied
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
    scheme, client, server = seen[0]
    assert (scheme, client[0], server) == ("ws", "127.0.0.1", ("127.0.0.1", srv.port))
    data = first["data"]
    assert (data["status"], data["user_id"], data["session_id"]) == ("connected", "hs-user", "s-1")
    assert data["subscriptions"][0]["filters"]["leagues"] == ["英超"]


async def test_an_upgrade_with_an_empty_body_header_is_accepted(spied: RunningServer) -> None:
    srv = spied
    # websockets tolerates "Content-Length: 0" on an upgrade.
    head, first = await _handshake(
        srv.port,
        "/realtime/ws?user_id=plain",
        [("Authorization", f"Bearer {token('plain')}".encode()), ("Content-Length", b"0")],
    )
    assert head.startswith(b"HTTP/1.1 101 ")
    assert first["data"]["user_id"] == "plain"


def test_the_http_protocol_lets_go_at_the_upgrade() -> None:
    """uvicorn's HTTP protocol holds a reference cycle (its parser calls it back) that
    its connection_lost breaks: it gets that call at the hand-over, so nothing of it
    waits for the cycle collector, accept after accept."""
    from websockets.sync.client import connect

    def http_protocols() -> int:
        return sum(type(o).__name__ == "HttpToolsProtocol" for o in gc.get_objects())

    with running_server() as srv:
        gc.collect()
        gc.disable()
        try:
            with (
                connect(srv.premium_url, open_timeout=TIMEOUT) as a,
                connect(srv.premium_url, open_timeout=TIMEOUT) as b,
            ):
                a.recv(TIMEOUT)
                b.recv(TIMEOUT)
                assert srv.call(http_protocols) == 0
        finally:
            gc.enable()


def test_an_open_connection_keeps_nothing_of_its_handshake() -> None:
    """On our layer the endpoint lets go of the handshake once admission has read it:
    no Starlette WebSocket, no parsed query (the token) and no headers stay alive per
    open connection (about 0.9 KB each, measured in docs/performance.md)."""
    from websockets.sync.client import connect

    def handshake_objects() -> list[str]:
        gc.collect()
        kept = ("WebSocket", "QueryParams", "StarletteHandshake", "Headers")
        return [
            type(o).__module__ + "." + type(o).__name__
            for o in gc.get_objects()
            if type(o).__name__ in kept
            and type(o).__module__.startswith(("starlette", "football_realtime"))
        ]

    with (
        running_server() as srv,
        connect(srv.premium_url, open_timeout=TIMEOUT) as a,
        connect(srv.premium_url, open_timeout=TIMEOUT) as b,
    ):
        a.recv(TIMEOUT)
        b.recv(TIMEOUT)
        assert srv.call(handshake_objects) == []
