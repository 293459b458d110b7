"""Single-frame text messages on our WebSocket layer (server/websocket_frames.py,
``single_text``): a read holding exactly one small unfragmented text frame is unmasked
and decoded by the layer itself, and offered to the app's ``on_text``
(``FrameTransport``) only while the app waits in ``receive``. Real server, real
clients; the app here is a test route that takes the messages starting with ``take``
in ``on_text`` and echoes the others with what it took so far."""

from __future__ import annotations

import asyncio
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect

from football_realtime.app import create_app
from football_realtime.edges.websocket import protocol_of

from ..support import TIMEOUT, RunningServer, make_settings, running_server


class Probe:
    """What the test route shares with the test (read on the server's loop)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.taken: list[str] = []
        self.holding = False
        self.gate: asyncio.Event | None = None


PROBE = Probe()


async def route(websocket: WebSocket) -> None:
    transport = protocol_of(websocket.scope)
    assert transport is not None
    probe = PROBE

    def on_text(text: str) -> bool:
        if text.startswith("take"):
            probe.taken.append(text)
            return True
        return False

    transport.on_text = on_text
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "hold":  # busy (not in receive) until the test opens the gate
                probe.gate = asyncio.Event()
                probe.holding = True
                await probe.gate.wait()
                probe.holding = False
            reply = {"got": text, "taken": list(probe.taken)}
            await websocket.send_text(orjson.dumps(reply).decode())
    except WebSocketDisconnect:
        return


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    settings = make_settings(max_message_size=1000)
    app = create_app(settings)
    app.add_api_websocket_route("/test-single-text", route)  # test configuration only
    with running_server(app=app, max_message_size=1000) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh_probe() -> None:
    PROBE.reset()


def url(srv: RunningServer) -> str:
    return f"ws://127.0.0.1:{srv.port}/test-single-text"


async def until(srv: RunningServer, cond: Any) -> None:
    """Poll a condition on the server's loop until it holds."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not srv.call(cond):
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_a_taken_message_does_not_reach_receive_the_others_do(
    srv: RunningServer, compression: str | None
) -> None:
    """Compressed too: the layer inflates a message the client deflated on its own
    (``client_no_context_takeover``)."""
    async with websockets.connect(url(srv), compression=compression) as ws:
        await ws.send("first")  # after its reply the app waits in receive
        assert orjson.loads(await ws.recv()) == {"got": "first", "taken": []}
        await ws.send("take 1")
        await until(srv, lambda: PROBE.taken)  # alone in its read (not with "echo")
        await ws.send("echo")
        assert orjson.loads(await ws.recv()) == {"got": "echo", "taken": ["take 1"]}


async def test_a_message_read_while_the_app_is_busy_waits_its_turn(srv: RunningServer) -> None:
    """Not offered to on_text while the app is not in receive: handling it in the read
    callback would put it ahead of the message the app is handling."""
    async with websockets.connect(url(srv), compression=None) as ws:
        await ws.send("take 0")  # may be read before the app first waits: then queued
        await ws.send("hold")
        await until(srv, lambda: PROBE.holding)
        await ws.send("take 2")
        # Read, and queued behind "hold":
        await until(srv, lambda: any(not p.inbox.empty() for p in srv.ws_layer.connections))
        srv.call(lambda: PROBE.gate.set())  # type: ignore[union-attr]
        first = orjson.loads(await ws.recv())
        if first["got"] == "take 0":  # it was queued (read before the app waited)
            first = orjson.loads(await ws.recv())
        taken = first["taken"]
        assert first == {"got": "hold", "taken": taken} and taken in ([], ["take 0"])
        assert orjson.loads(await ws.recv()) == {"got": "take 2", "taken": taken}
        await ws.send("take 3")  # the app waits again: taken
        await until(srv, lambda: "take 3" in PROBE.taken)
        await ws.send("echo")
        assert orjson.loads(await ws.recv()) == {"got": "echo", "taken": [*taken, "take 3"]}


@pytest.mark.parametrize("compression", [None, "deflate"])
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 127, 1000])
async def test_sizes_and_masks(srv: RunningServer, size: int, compression: str | None) -> None:
    """Every length around the 7-bit/16-bit boundaries and the mask's period, with the
    random masks of a real client, multi-byte UTF-8 across mask boundaries; plain and
    compressed."""
    text = ("é€x" * size)[:size]
    text = text.encode()[:size].decode("utf-8", "ignore")
    async with websockets.connect(url(srv), compression=compression, max_size=None) as ws:
        for _ in range(4):  # a new mask each time
            await ws.send(text)
            assert orjson.loads(await ws.recv())["got"] == text


def raw_connect(srv: RunningServer, deflate: bool = False) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
    s.sendall(
        b"GET /test-single-text HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + offer + b"\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert (b"client_no_context_takeover" in head) is deflate, head
    return s


def deflated(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def close_code(s: socket.socket) -> int:
    """The close code of the server's close frame (skipping anything before it)."""
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        head = 2
        if n == 126:
            n, head = int.from_bytes(data[i + 2 : i + 4], "big"), 4
        if opcode == 0x8:
            return int.from_bytes(data[i + head : i + head + 2], "big")
        i += head + n
    raise AssertionError(f"no close frame in {data!r}")


BOMB = deflated(b"x" * 1001)  # 1001 bytes inflated, over the 1000-byte limit


@pytest.mark.parametrize(
    ("frame", "deflate", "code"),
    [
        # invalid UTF-8, alone in its read: 1007
        (b"\x81\x82\x00\x00\x00\x00\xc3\x28", False, 1007),
        # ... compressed
        (
            bytes((0xC1, 0x80 | len(deflated(b"\xc3\x28")))) + bytes(4) + deflated(b"\xc3\x28"),
            True,
            1007,
        ),
        # over the message size limit (1000 bytes): 1009, as websockets does
        (b"\x81\xfe\x03\xe9\x00\x00\x00\x00" + b"x" * 1001, False, 1009),
        # small on the wire, inflating past the limit: 1009 (websockets)
        (bytes((0xC1, 0x80 | len(BOMB))) + bytes(4) + BOMB, True, 1009),
        # unmasked: websockets fails it (1002)
        (b"\x81\x02ok", False, 1002),
        # RSV1 without a negotiated extension: websockets fails it (1002)
        (b"\xc1\x82\x00\x00\x00\x00ok", False, 1002),
    ],
)
def test_frames_the_layer_refuses_close_with_the_right_code(
    srv: RunningServer, frame: bytes, deflate: bool, code: int
) -> None:
    s = raw_connect(srv, deflate)
    try:
        s.sendall(frame)
        assert close_code(s) == code
    finally:
        s.close()
