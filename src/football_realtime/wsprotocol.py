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
  (e.g. an application ``heartbeat``) since the ping;
* fixes and limits the stock layer lacks (docs/security.md): at most
  ``max_fragments`` frames per fragmented message (1009; without it, empty
  continuation frames grow a list without bound, as they do not count towards the
  size limit); a token bucket on client pings (1008; each ping makes the server
  write a pong); an answer to handshakes the stock layer leaves hanging forever
  (too many or too long headers: 431; a body on the upgrade: 400); and 426 with
  ``Sec-WebSocket-Version: 13`` for other protocol versions (RFC 6455 §4.4).

Measured against uvicorn's ASGI send path in docs/performance.md.
"""

from __future__ import annotations

import codecs
import contextlib
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from .core.limits import TokenBucket

EXTENSION = "football_realtime.transport"


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    #: Limits; ``with_limits`` makes a subclass carrying the configured values.
    max_fragments = 4096
    max_pings_per_second = 5.0
    ping_burst = 20
    #: False: keep the limits but do not offer direct frame writes (the portable ASGI
    #: send path, as under any other server).
    fast_path = True

    @classmethod
    def with_limits(
        cls, *, max_fragments: int, max_pings_per_second: float, fast_path: bool = True
    ) -> type[RealtimeWebSocketProtocol]:
        return type(
            cls.__name__,
            (cls,),
            {
                "max_fragments": max_fragments,
                "max_pings_per_second": max_pings_per_second,
                "fast_path": fast_path,
            },
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_paused = False
        self.on_writable: Callable[[bool], None] | None = None
        # Graceful shutdown (SIGTERM): lets the app say goodbye before uvicorn's 1012.
        self.on_shutdown: Callable[[], None] | None = None
        self.last_received = 0.0
        self.pings = TokenBucket(self.max_pings_per_second, self.ping_burst, self.loop.time())
        self.utf8 = _Utf8Decoder()
        self.conn.__class__ = _ServerProtocol

    # Text is validated frame by frame (an invalid fragment fails at once with 1007,
    # RFC 6455 §8.1) and decoded once; uvicorn decodes at the end and logs a traceback
    # for every invalid message a client sends.

    def handle_text(self, event: Frame) -> None:
        if self.close_sent:
            return
        self.curr_msg_data_type = "text"
        self.utf8 = _Utf8Decoder()
        self.frames = []
        self._text_piece(event)

    def handle_cont(self, event: Frame) -> None:
        if self.close_sent:
            return
        if len(self.frames) >= self.max_fragments:
            self.fail(1009, f"message has more than {self.max_fragments} fragments")
            return
        if self.curr_msg_data_type == "text":
            self._text_piece(event)
        else:
            super().handle_cont(event)

    def _text_piece(self, event: Frame) -> None:
        try:
            piece = self.utf8.decode(event.data, event.fin)
        except UnicodeDecodeError as exc:
            self.fail(1007, f"invalid UTF-8 at position {exc.start}")
            return
        self.frames.append(piece)  # type: ignore[arg-type]
        if event.fin:
            text = "".join(self.frames)  # type: ignore[arg-type]
            self.frames = []
            if self.close_sent:
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()

    def handle_events(self) -> None:
        events = self.conn.events_received()
        # websockets has already queued a pong for every ping in this read, and the
        # first handle_ping() would write them all: charge the pings up front.
        pings = sum(1 for e in events if isinstance(e, Frame) and e.opcode == Opcode.PING)
        if pings:
            now = self.loop.time()
            if not all([self.pings.take(now) for _ in range(pings)]):
                self.conn.data_to_send()  # drop the queued pongs
                self.fail(1008, "too many pings")
                return
        for event in events:
            if isinstance(event, Request):
                self.handle_connect(event)
            elif not isinstance(event, Frame):  # pragma: no cover - servers get no Response
                continue
            elif event.opcode == Opcode.CONT:
                self.handle_cont(event)
            elif event.opcode == Opcode.TEXT:
                self.handle_text(event)
            elif event.opcode == Opcode.BINARY:
                self.handle_bytes(event)
            elif event.opcode == Opcode.PING:
                self.handle_ping()
            elif event.opcode == Opcode.PONG:
                self.handle_pong(event)
            elif event.opcode == Opcode.CLOSE:
                self.handle_close(event)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection from the parsing side: close frame, then drop TCP."""
        self.frames = []
        self.conn.fail(code, reason)
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    def handle_connect(self, event: Request) -> None:
        versions = event.headers.get_all("Sec-WebSocket-Version")
        if versions and versions != ["13"]:
            self.request = event
            self.reject_handshake(
                426,
                "Failed to open a WebSocket connection: unsupported Sec-WebSocket-Version; "
                "this server speaks 13.\n",
                {"Sec-WebSocket-Version": "13"},
            )
            return
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent and self.fast_path:
            scope["extensions"][EXTENSION] = {"protocol": self}

    def data_received(self, data: bytes) -> None:
        self.last_received = self.loop.time()
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # websockets refused the request but uvicorn never writes its answer, and
            # the connection would hang forever: send it (or a 400) and close.
            self.handshake_initiated = self.handshake_complete = self.close_sent = True
            output = b"".join(self.conn.data_to_send())
            if not output:
                body = b"Failed to open a WebSocket connection: invalid HTTP request.\n"
                output = (
                    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
                )
            self.transport.write(output)
            self.transport.close()

    def reject_handshake(self, status: int, text: str, headers: dict[str, str]) -> None:
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        response = self.conn.reject(status, text)
        for name, value in headers.items():
            response.headers[name] = value
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

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


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class _ServerProtocol(ServerProtocol):
    """websockets' server protocol, accepting a close frame in the middle of a
    fragmented message (control frames may interleave, RFC 6455 §5.4): the partial
    message is dropped and the close is echoed, instead of failing with 1002
    (Autobahn 7.1.5)."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None
        super().recv_frame(frame)


def protocol_of(scope: Mapping[str, Any]) -> RealtimeWebSocketProtocol | None:
    ext = scope.get("extensions") or {}
    entry = ext.get(EXTENSION)
    if entry is None:
        return None
    proto = entry.get("protocol")
    return proto if isinstance(proto, RealtimeWebSocketProtocol) else None


__all__ = ["EXTENSION", "RealtimeWebSocketProtocol", "protocol_of"]
