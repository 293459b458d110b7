"""Dead peers are closed; application heartbeats keep a connection alive; slow consumers are cut."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import pytest

from ..support import TIMEOUT, WSClient, running_server, token


def raw_handshake(port: int, path: str = "/realtime/ws") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert b" 101 " in buf.split(b"\r\n", 1)[0]
    return s


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + mask + body


def wait_closed(s: socket.socket, deadline_s: float) -> bytes:
    """Read until the server closes the TCP connection; return everything read."""
    s.settimeout(0.2)
    data = b""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("server did not close the connection")


def test_silent_peer_is_closed_after_ping_timeout() -> None:
    with running_server(ping_interval=0.3, ping_timeout=0.3) as srv:
        s = raw_handshake(srv.port)  # never answers pings
        data = wait_closed(s, TIMEOUT)
        assert b"\x89" in data  # it was pinged
        s.close()
        assert srv.call(lambda: len(srv.realtime.hub.connections)) == 0


def test_application_heartbeat_keeps_a_connection_alive() -> None:
    with running_server(ping_interval=0.3, ping_timeout=0.3) as srv:
        s = raw_handshake(srv.port)  # never answers pings, but sends heartbeats
        s.settimeout(0.05)
        end = time.monotonic() + 1.5  # five ping timeouts
        got = b""
        while time.monotonic() < end:
            s.sendall(masked_text(b'{"type":"heartbeat"}'))
            try:
                chunk = s.recv(65536)
                assert chunk, "closed despite heartbeats"
                got += chunk
            except TimeoutError:
                pass
            time.sleep(0.1)  # pacing the heartbeats, not ordering
        assert got.count(b"message_ack") >= 5
        assert srv.call(lambda: len(srv.realtime.hub.connections)) == 1
        s.close()


@pytest.mark.parametrize("fast", [True, False])
async def test_slow_consumer_is_disconnected_with_4001_and_others_keep_receiving(
    fast: bool,
) -> None:
    with running_server(fast=fast, outbound_buffer_bytes=64 * 1024) as srv:
        slow = await asyncio.to_thread(
            raw_handshake, srv.port, f"/realtime/ws?token={token('slow')}"
        )
        try:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.sendall(masked_text(b'{"type":"subscribe","data":{"subscription_type":"odds"}}'))
            async with await WSClient.connect(srv.ws_url) as fine:
                await fine.recv()
                await fine.subscribe("odds")
                pad = "x" * 2000
                n = 0
                deadline = time.monotonic() + TIMEOUT
                while srv.realtime.stats.slow_consumer_disconnects == 0:
                    assert time.monotonic() < deadline, "slow consumer never cut"
                    ev = {
                        "event_type": "odds_updated",
                        "data": {
                            "match_id": n,
                            "bookmaker": "b",
                            "home_odds": 2.0,
                            "draw_odds": 3.0,
                            "away_odds": 4.0,
                            "note": pad,
                        },
                    }
                    await asyncio.to_thread(srv.publish, ev)
                    n += 1
                    await fine.events(1)  # the healthy client keeps up with every event
                # the hub forgot the slow connection at once; the healthy one is untouched
                conns = srv.call(lambda: list(srv.realtime.hub.connections))
                assert len(conns) == 1
                r = await fine.request("heartbeat")
                assert r["event_type"] == "message_ack"
            if fast:
                # our WebSocket layer also drops the TCP connection with a reset, so the
                # kernel's backlog for the stuck peer is discarded rather than trickled out
                await asyncio.to_thread(wait_closed, slow, TIMEOUT)
            assert srv.call(lambda: dict(srv.realtime.stats.closed_by_code)).get(4001) == 1
        finally:
            slow.close()
