"""Our WebSocket protocol for uvicorn: an ``asyncio.Protocol`` on websockets' sans-I/O layer.

uvicorn's HTTP protocol hands a WebSocket upgrade over to the class given as
``uvicorn.Config(ws=...)``: it constructs it with ``config=``, ``server_state=`` and
``app_state=``, calls ``connection_made(transport)``, switches the transport to it and
feeds it the upgrade request with ``data_received``. That is the whole contract with
uvicorn, besides documented ``uvicorn.Config`` settings (``loaded_app``,
``root_path``, ``ws_*``, ``access_log``, ``server_header``, ``date_header``,
``headers``); ``server_state`` is not touched. The rest is websockets' documented
sans-I/O API (``ServerProtocol``: ``receive_data``, ``receive_eof``,
``events_received``, ``data_to_send``, ``accept``, ``reject``, ``send_response``,
``send_*``, ``fail``, ``close_expected``, ``handshake_exc``,
``close_code``/``close_reason``/``close_exc``; ``Request``/``Response``/``Headers``,
``Frame``/``Opcode``) and the ASGI WebSocket interface towards the app.

What it adds to a plain ASGI WebSocket server (docs/security.md, docs/performance.md):

* permessage-deflate (RFC 7692) when the layer has ``compression``: negotiated by
  websockets' ``ServerPerMessageDeflateFactory`` (``websocket_layer.deflate_extensions``),
  and ``deflate`` tells the service it may write the shared compressed frames;
* the fast path, through the ASGI scope extension ``football_realtime.transport``
  (``connection.FrameTransport``): direct writes of pre-built frames, flow-control
  callbacks that drive the connection's outbound buffer (no task or await per
  delivery), ``close_now`` (with a TCP reset for slow consumers) and a lost callback;
* the service's own WebSocket routes called directly (``routes``), not through the
  app's middleware and router; every other path goes to the ASGI app;
* keepalive pings of all connections on one shared timer wheel; a connection that
  answers late is kept if it sent anything since the ping;
* limits: at most ``max_fragments`` frames per message (1009), a token bucket on
  client pings (1008), UTF-8 validated frame by frame (1007), 426 with
  ``Sec-WebSocket-Version: 13`` for other versions, an answer (not a hang) to
  handshakes websockets refuses (431, 400);
* a close frame in the middle of a fragmented message drops the partial message and
  is echoed (RFC 6455 §5.4 lets control frames interleave; websockets would fail
  the connection with 1002): frame boundaries are followed in the bytes received and
  an empty final continuation frame is fed to websockets before such a close;
* lean idle connections: slots, a receive queue and a writable flag that allocate
  only while a task waits, no handshake request, response or headers kept once open.

One ``ServerProtocol`` per connection reads the upgrade request uvicorn hands over
(``receive_data``), checks it (``accept``; refusals are websockets': 400, 431, ...),
sends the response the app decides (``send_response``) and then parses frames.

The class is assembled in layers, one module each, each using only those below it
(``websocket_state``): ``websocket_keepalive``, ``websocket_frames``,
``websocket_asgi``, then this module (asyncio callbacks, the opening handshake, the
fast path). What the connections of a server share is in ``websocket_layer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote

from websockets.exceptions import InvalidState
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from ..service.connection import FRAME_TRANSPORT
from .transport_view import TransportView
from .waiters import Flag, Inbox
from .websocket_asgi import AsgiBridge, ClientDisconnected
from .websocket_layer import (
    NativeRoutes,
    WebSocketLayer,
    client_inflate_bits,
    shared_frames_allowed,
)

_BAD_REQUEST_TEXT = "Failed to open a WebSocket connection: invalid HTTP request.\n"


class WebSocketProtocol(AsgiBridge):
    """One WebSocket connection. ``layer`` (the per-server state) is set on the class
    ``server.config.ws_protocol`` makes for each server."""

    __slots__ = ()

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        layer = self.layer
        if layer.config is not config:
            layer.bind(config, app_state)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn: ServerProtocol | None = None
        self.scope: dict[str, Any] | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.response: Response | None = None
        self.deflate = False
        self.inflate_bits = 0
        self.initial_response: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.inbox = Inbox(self.layer.loop)
        # Created when writing first pauses.
        self.writable = None
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.read_paused = False
        self.write_paused = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.on_writable: Callable[[bool], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        # Graceful shutdown (SIGTERM): lets the app say goodbye before the 1012.
        self.on_shutdown: Callable[[], None] | None = None
        # Text messages handled in the read callback while the app waits (fast path).
        self.on_text: Callable[[str], bool] | None = None
        # Keepalive, on the layer's wheel.
        self.keepalive_slot = 0
        self.pending_ping: bytes | None = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0
        self.last_received = 0.0
        # Created at the first ping (most clients never send one).
        self.pings = None
        # A message in several frames being received: its frames, and for text the
        # per text message, not per idle connection).
        self.frames: list[Any] | None = None
        self.text = False
        self.utf8 = None
        # Frame boundaries as read so far (see FrameReader.boundaries).
        self.frag_open = False
        self.frag_skip = 0
        self.frag_tail = b""
        self.partial_dropped = False

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, TransportView):
            transport = transport.real  # handed over by our HeaderDeadline
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.layer.connections.add(self)
        addrs = self.layer.addrs
        sock = transport.get_extra_info("socket")
        try:
            peer = sock.getpeername() if sock is not None else transport.get_extra_info("peername")
        except OSError:  # pragma: no cover - seen with uvloop on Unix sockets
            peer = None
        if isinstance(peer, (tuple, list)) and len(peer) >= 2:
            # One shared copy of each client host string.
            self.client = (sys.intern(str(peer[0])), int(peer[1]))
        local = sock.getsockname() if sock is not None else transport.get_extra_info("sockname")
        if isinstance(local, (tuple, list)) and len(local) >= 2:
            server: tuple[str, int | None] = (str(local[0]), int(local[1]))
        elif isinstance(local, str):
            server = (local, None)
        else:
            return
        # One shared copy of the listening address.
        self.server = addrs.setdefault(server, server)

    def data_received(self, data: bytes) -> None:
        layer = self.layer
        self.last_received = layer.loop.time()
        conn = self.conn
        if conn is None:
            if self.scope is None and not self.close_sent:
                self.handshake(data)
            return
        if self.single_text(conn, data):
            return
        data = self.boundaries(data)
        if not data:
            return
        conn.receive_data(data)
        peer_closed = self.handle_events(conn.events_received())
        self.flush(conn, peer_closed)

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = Flag()
        self.writable.clear()
        self.write_paused = True
        cb = self.on_writable
        if cb is not None:
            cb(False)

    def resume_writing(self) -> None:
        if self.writable is not None:
            self.writable.set()
        self.write_paused = False
        cb = self.on_writable
        if cb is not None:
            cb(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_writable = None
        self.on_shutdown = None
        self.on_text = None
        lost, self.on_lost = self.on_lost, None
        if lost is not None:
            lost()  # stop writing to a dead transport before the endpoint task notices
        self.stop_keepalive()
        # The TCP connection ended without a close frame from the peer (one would have
        # ended the connection in `flush`, websocket_frames.py, with its code and reason,
        # and the app reads that first): 1006, abnormal closure. 1005 would claim a close
        # frame without a status code arrived (uvicorn's protocols send 1005 here; issue
        # 15, bug 4).
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
        self.layer.forget(self)
        self.handshake_complete = True
        self.disconnected = True
        # Unblock a send() waiting for the socket: no resume_writing comes any more.
        if self.writable is not None:
            self.writable.set()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if exc is None:
            self.transport.close()

    # -- the opening handshake ---------------------------------------------------

    def handshake(self, data: bytes) -> None:
        """The upgrade request uvicorn hands over: websockets reads and checks it
        (``receive_data``, ``accept``); the response waits for the app."""
        layer = self.layer
        conn = ServerProtocol(
            extensions=layer.extensions, max_size=layer.max_size, logger=layer.ws_logger
        )
        conn.receive_data(data)
        events = conn.events_received()
        if conn.handshake_exc is not None or not events:
            output = b"".join(conn.data_to_send())
            if not output:  # websockets only closes: answer 400 rather than nothing
                conn = ServerProtocol(logger=layer.ws_logger)
                conn.send_response(conn.reject(400, _BAD_REQUEST_TEXT))
                output = b"".join(conn.data_to_send())
            self._refuse(output)
            return
        request = events[0]
        assert isinstance(request, Request)
        versions = request.headers.get_all("Sec-WebSocket-Version")
        if versions and versions != ["13"]:
            # RFC 6455 §4.4: tell the client which version this server speaks.
            response = conn.reject(
                426,
                "Failed to open a WebSocket connection: unsupported Sec-WebSocket-Version; "
                "this server speaks 13.\n",
            )
            response.headers["Sec-WebSocket-Version"] = "13"
            conn.send_response(response)
            self._refuse(b"".join(conn.data_to_send()))
            return
        response = conn.accept(request)
        if response.status_code != 101:
            conn.send_response(response)
            self._refuse(b"".join(conn.data_to_send()))
            return
        self.conn = conn
        self.response = response  # sent when the app accepts
        if layer.extensions is not None:
            negotiated = response.headers.get("Sec-WebSocket-Extensions")
            self.deflate = shared_frames_allowed(negotiated)
            self.inflate_bits = client_inflate_bits(negotiated)
        raw_headers = [
            (name.encode("ascii"), value.encode("iso-8859-1"))
            for name, value in request.headers.raw_items()
        ]
        raw_path, _, query = request.path.partition("?")
        root = layer.root_path
        subprotocols: list[str] = []
        for header in request.headers.get_all("Sec-WebSocket-Protocol"):
            subprotocols.extend([token.strip() for token in header.split(",")])
        # websockets' parser keeps the request for the connection's lifetime; its
        # headers and target (with a token, maybe) are in the scope now.
        request.headers.clear()
        request.path = ""
        extensions: dict[str, Any] = {"websocket.http.response": {}}
        if layer.fast_path:
            extensions[FRAME_TRANSPORT] = {"protocol": self}
        self.scope = {
            "type": "websocket",
            "asgi": {"version": layer.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if self.transport.get_extra_info("sslcontext") else "ws",
            "server": self.server,
            "client": self.client,
            "root_path": root,
            "path": root + (unquote(raw_path) if "%" in raw_path else raw_path),
            "raw_path": (root + raw_path).encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": raw_headers,
            "subprotocols": subprotocols,
            "state": layer.app_state.copy(),
            "extensions": extensions,
        }
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.task = layer.loop.create_task(self.run_asgi())

    # -- the fast path (connection.FrameTransport) --------------------------------

    @property
    def write(self) -> Callable[[bytes], object]:
        """The socket's write, for complete pre-built frames."""
        return self.transport.write

    def close_now(self, code: int, reason: str, abort: bool) -> None:
        """Start the closing handshake from outside the ASGI app, without awaiting.

        ``abort``: the peer is not reading (slow consumer); drop the transport after a
        short grace instead of waiting for the buffer to drain.
        """
        conn = self.conn
        if (
            conn is None
            or self.close_sent
            or self.transport.is_closing()
            or not self.handshake_complete
        ):
            return
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        conn.send_close(code, reason)
        self.transport.write(b"".join(conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.close_timer is not None:
            self.close_timer.cancel()
        if abort:
            self.close_timer = self.layer.loop.call_later(2.0, self.reset)
        else:
            self.close_timer = self.layer.loop.call_later(
                self.layer.close_timeout, self.transport.abort
            )

    def reset(self) -> None:
        """Drop the connection with a TCP reset, discarding what the kernel still holds
        for a peer that does not read (otherwise close() would trickle it out)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def shutdown(self) -> None:
        """Graceful server shutdown: the app's goodbye if it registered one, then 1012."""
        cb, self.on_shutdown = self.on_shutdown, None
        if cb is not None and self.handshake_complete and not self.close_sent:
            cb()  # e.g. connection_status closing, then close_now(1012)
        self.stop_keepalive()
        if self.close_sent:
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.transport.close()
            return
        conn = self.conn
        if conn is not None and self.handshake_complete and self.initial_response is None:
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1012})
            with contextlib.suppress(InvalidState):
                conn.send_close(1012)
            self.transport.write(b"".join(conn.data_to_send()))
        else:
            self.send_500_response()
        self.transport.close()


__all__ = ["ClientDisconnected", "NativeRoutes", "WebSocketLayer", "WebSocketProtocol"]
