"""Server keepalive on the fast WebSocket layer (one shared timer for all connections):
pings are sent, answered connections live on, silent ones are closed."""

from __future__ import annotations

import asyncio
import base64
import os
import struct

from ..support import TIMEOUT, UNIT, RunningServer, WSClient, running_server


async def raw_upgrade(
    srv: RunningServer, uid: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /realtime/ws?user_id={uid} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert b" 101 " in head
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


def masked(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def connected(srv: RunningServer, uid: str) -> bool:
    return bool(
        srv.call(lambda: any(c.user_id == uid for c in srv.realtime.hub.connections.values()))
    )


async def test_pings_answered_keep_the_connection_and_silence_closes_it() -> None:
    with running_server(ping_interval=0.2 * UNIT, ping_timeout=0.3 * UNIT) as srv:
        # A real client answers pings by itself: it outlives several intervals.
        async with await WSClient.connect(srv.ws_url + "?user_id=answering") as client:
            # A raw client that answers the first ping by hand, then goes silent.
            reader, writer = await raw_upgrade(srv, "silent")
            pings = 0
            while pings < 1:
                op, payload = await read_frame(reader)
                if op == 0x9:
                    pings += 1
                    writer.write(masked(0xA, payload))
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while connected(srv, "silent"):
                assert asyncio.get_running_loop().time() < deadline, "silent client kept"
                await asyncio.sleep(0.02 * UNIT)
            # It was closed by the server with 1011 (keepalive ping timeout).
            codes = []
            while True:
                try:
                    op, payload = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                if op == 0x8:
                    codes.append(struct.unpack("!H", payload[:2])[0])
            assert codes == [1011]
            writer.close()
            assert connected(srv, "answering")
            assert (await client.request("heartbeat"))["event_type"] == "message_ack"


async def test_application_heartbeats_count_as_liveness() -> None:
    with running_server(ping_interval=0.2 * UNIT, ping_timeout=0.2 * UNIT) as srv:
        reader, writer = await raw_upgrade(srv, "browser-like")
        # Never answers pings (like a page whose pongs are late) but sends heartbeats.
        pings = 0

        async def count_pings() -> None:
            nonlocal pings
            while True:
                op, _ = await read_frame(reader)
                pings += op == 0x9

        counter = asyncio.create_task(count_pings())
        for _ in range(12):
            writer.write(masked(0x1, b'{"type":"heartbeat"}'))
            await asyncio.sleep(0.1 * UNIT)
        assert not counter.done(), counter
        counter.cancel()
        assert pings >= 2
        assert connected(srv, "browser-like")
        writer.close()
