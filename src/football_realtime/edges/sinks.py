"""How a connection's bytes reach its socket: the two :class:`Sink` implementations.

* :class:`FastSink` writes pre-built frames through the ``FrameTransport`` our WebSocket
  layer (``server/``) offers and drains the connection's buffer from its ``resume_writing``
  callback: no task and no await per connection or delivery.
* :class:`AsgiSink` works under any ASGI server (the router mounted in another app):
  a writer task awaits ``websocket.send`` for what the buffer holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

from ..service.connection import Connection, FrameTransport

#: On the ASGI path, a send slower than this means the socket is not keeping up.
ASGI_BEHIND_S = 0.002


class FastSink:
    """Writes pre-built frames through the server's ``FrameTransport``."""

    __slots__ = ("direct", "proto", "writable")

    def __init__(self, proto: FrameTransport) -> None:
        self.proto = proto
        self.writable = not proto.write_paused
        self.direct: Callable[[bytes], object] | None = proto.write

    def write(self, frame: bytes) -> None:
        self.proto.write(frame)

    def wake(self) -> None:
        pass  # resume_writing drains the buffer

    def close(self, code: int, reason: str, abort: bool) -> None:
        self.writable = False
        self.proto.close_now(code, reason, abort)


class AsgiSink:
    """Portable path for any ASGI server: a writer task awaits ``websocket.send``."""

    __slots__ = (
        "_close",
        "_event",
        "_owner",
        "_task",
        "aborted",
        "conn",
        "direct",
        "websocket",
        "writable",
    )

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.writable = False
        self.direct: Callable[[bytes], object] | None = None
        self.conn: Connection | None = None
        self._event = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._owner: asyncio.Task[Any] | None = None
        self.aborted = False

    def start(self, conn: Connection) -> None:
        self.conn = conn
        self._owner = asyncio.current_task()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def write(self, frame: bytes) -> None:  # pragma: no cover - never writable
        raise AssertionError("AsgiSink writes from its task")

    def wake(self) -> None:
        self._event.set()

    def close(self, code: int, reason: str, abort: bool) -> None:
        self._close = (code, reason)
        self._event.set()
        if abort and self._owner is not None:
            # The writer may be stuck awaiting a socket that is never drained; the ASGI
            # app task (the endpoint) is cancelled and returns, so the server drops it.
            self.aborted = True
            if self._task is not None:
                self._task.cancel()
            self._owner.cancel()

    async def _run(self) -> None:
        conn = self.conn
        assert conn is not None
        out = conn.out
        ws = self.websocket
        clock = asyncio.get_running_loop().time
        try:
            while True:
                await self._event.wait()
                self._event.clear()
                behind = False
                while out and self._close is None:
                    t0 = clock()
                    await ws.send_text(conn.next_message(behind).payload.decode())
                    # A send that keeps up completes in microseconds; one that waited
                    # on the socket means what queued meanwhile is behind it.
                    behind = clock() - t0 > ASGI_BEHIND_S
                conn.notify_drained()
                if self._close is not None:
                    code, reason = self._close
                    await ws.close(code, reason)
                    return
        except Exception:  # the peer went away mid-send; the receive loop cleans up
            return

    async def stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["AsgiSink", "FastSink"]
