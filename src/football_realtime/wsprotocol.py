"""Our uvicorn WebSocket protocol: uvicorn's websockets-sansio layer plus a fast send path.

``football-realtime serve`` runs uvicorn with ``ws=RealtimeWebSocketProtocol``. It
behaves exactly like uvicorn's ``websockets-sansio`` implementation (same parser,
limits and handshake) and adds, through the ASGI scope extension
``football_realtime.transport``:

* direct writes of pre-built frames to the transport (the hub serialises and frames
  an event once and writes the same bytes to every subscriber);
* flow-control callbacks (``pause_writing``/``resume_writing``) that drive the
  connection's outbound buffer, so no task or await is needed per connection;
* liveness: a connection that answers pings late is kept if it sent anything else
  (e.g. an application ``heartbeat``) since the ping.

Measured against uvicorn's ASGI send path in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

EXTENSION = "football_realtime.transport"


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_paused = False
        self.on_writable: Callable[[bool], None] | None = None
        # Graceful shutdown (SIGTERM): lets the app say goodbye before uvicorn's 1012.
        self.on_shutdown: Callable[[], None] | None = None
        self.last_received = 0.0

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:
            scope["extensions"][EXTENSION] = {"protocol": self}

    def data_received(self, data: bytes) -> None:
        self.last_received = self.loop.time()
        super().data_received(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_paused = True
        cb = self.on_writable
        if cb is not None:
            cb(False)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_paused = False
        cb = self.on_writable
        if cb is not None:
            cb(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_writable = None
        self.on_shutdown = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        cb, self.on_shutdown = self.on_shutdown, None
        if cb is not None and self.handshake_complete and not self.close_sent:
            cb()  # sends connection_status closing, then closes with 1012
        super().shutdown()

    def keepalive_timeout(self) -> None:
        # Anything received since the ping proves the peer alive (browsers cannot send
        # pings, but they send application heartbeats).
        if self.last_received > self.ping_sent_at and not self.close_sent:
            self.pong_timer = None
            self.pending_ping_payload = None
            self.schedule_ping()
            return
        super().keepalive_timeout()

    def close_now(self, code: int, reason: str, abort: bool) -> None:
        """Start the closing handshake from outside the ASGI app, without awaiting.

        ``abort``: the peer is not reading (slow consumer); drop the transport after a
        short grace instead of waiting for the buffer to drain.
        """
        if self.close_sent or self.transport.is_closing() or not self.handshake_complete:
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.close_timer is not None:
            self.close_timer.cancel()
        timeout = 2.0 if abort else self.close_timeout
        self.close_timer = self.loop.call_later(
            timeout, self.reset if abort else self.transport.abort
        )

    def reset(self) -> None:
        """Drop the connection with a TCP reset, discarding what the kernel still holds
        for a peer that does not read (otherwise close() would trickle it out)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


def protocol_of(scope: Mapping[str, Any]) -> RealtimeWebSocketProtocol | None:
    ext = scope.get("extensions") or {}
    entry = ext.get(EXTENSION)
    if entry is None:
        return None
    proto = entry.get("protocol")
    return proto if isinstance(proto, RealtimeWebSocketProtocol) else None


__all__ = ["EXTENSION", "RealtimeWebSocketProtocol", "protocol_of"]
