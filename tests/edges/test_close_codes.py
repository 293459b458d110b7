"""The close code recorded for a connection (``/realtime/stats`` ``closed_by_code`` and the
``connection closed`` log line) is the truth about how it ended (issue 15, bug 4).

A TCP connection that vanishes without a close frame (a crashed client, a pulled cable,
``SO_LINGER 0`` / ``transport.abort()``) is 1006, abnormal closure; 1005 means a close
frame *without* a status code was received. Checked on both send paths of ``serve`` (our
WebSocket layer) and on the router mounted in a plain FastAPI app run by stock uvicorn,
whose WebSocket implementation reports an abrupt drop as 1005.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from football_realtime import Realtime

from ..support import TIMEOUT, admin_headers, free_port, make_settings, running_server


@contextlib.contextmanager
def mounted_on_stock_uvicorn() -> Iterator[int]:
    """The README's "mount into your FastAPI app", run by stock uvicorn (its default
    WebSocket implementation); yields the port."""
    realtime = Realtime(make_settings())
    host = FastAPI(lifespan=realtime.lifespan)
    host.include_router(realtime.router, prefix="/realtime")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(host, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(TIMEOUT * 2)


@contextlib.contextmanager
def server_on(path: str) -> Iterator[int]:
    if path == "mounted":
        with mounted_on_stock_uvicorn() as port:
            yield port
    else:
        with running_server(fast=path == "serve-fast") as srv:
            yield srv.port


PATHS = ["serve-fast", "serve-asgi", "mounted"]


def handshake(port: int) -> socket.socket:
    """A raw client: the upgrade, then the service's ``connected`` message (so the
    connection is registered and in its receive loop)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /realtime/ws?user_id=dropper HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buf = b""
    while b"connection_status" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed during the handshake: {buf!r}"
        buf += chunk
    assert b" 101 " in buf.split(b"\r\n", 1)[0], buf
    return s


def reset(s: socket.socket) -> None:
    """Drop the TCP connection with a reset (SO_LINGER 0), as a crashed peer's kernel
    or ``transport.abort()`` after a lost route would: no close frame, no FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def fin(s: socket.socket) -> None:
    """Close the TCP connection without a close frame (a FIN, no WebSocket goodbye)."""
    s.close()


def empty_close_frame(s: socket.socket) -> None:
    """A close frame without a status code (RFC 6455 §7.1.5: the code is then 1005),
    masked as a client's must be; then wait for the server to end the connection."""
    s.sendall(bytes((0x88, 0x80)) + os.urandom(4))
    with contextlib.suppress(ConnectionResetError):
        while s.recv(65536):
            pass
    s.close()


def closed_by_code(port: int) -> dict[str, int]:
    r = httpx.get(
        f"http://127.0.0.1:{port}/realtime/stats", headers=admin_headers(), timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    codes: dict[str, int] = r.json()["closed_by_code"]
    return codes


def wait_for_close(port: int) -> dict[str, int]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        codes = closed_by_code(port)
        if codes:
            return codes
        assert time.monotonic() < deadline, "the connection was never recorded as closed"
        time.sleep(0.02)


def close_lines(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [
        getattr(r, "code", None)
        for r in caplog.records
        if r.name == "football_realtime.transport" and r.getMessage() == "connection closed"
    ]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("ending", "expected"), [(reset, 1006), (fin, 1006), (empty_close_frame, 1005)]
)
def test_close_code_recorded_is_how_the_connection_ended(
    path: str,
    ending: Callable[[socket.socket], None],
    expected: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "football_realtime.transport")
    with server_on(path) as port:
        ending(handshake(port))
        assert wait_for_close(port) == {str(expected): 1}
        deadline = time.monotonic() + TIMEOUT
        while not close_lines(caplog):  # logged right after the count, same task
            assert time.monotonic() < deadline, "no 'connection closed' line"
            time.sleep(0.01)
        assert close_lines(caplog) == [expected]
        if path != "mounted":  # the mounted router has no /metrics unless the host adds it
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT).text
            assert f'realtime_connections_closed_total{{code="{expected}"}} 1.0' in metrics
