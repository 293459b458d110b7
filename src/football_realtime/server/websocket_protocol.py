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
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import random
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, ClassVar, cast
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from ..core.limits import TokenBucket
from ..service.connection import FRAME_TRANSPORT
from ..timerwheel import TimerWheel
from .transport_view import TransportView

#: ASGI apps called directly for their exact path, instead of the app's full stack.
NativeRoutes = Mapping[str, Callable[[Any, Any, Any], Awaitable[None]]]

access_logger = logging.getLogger("uvicorn.error")


class ClientDisconnected(OSError):
    """``send`` on a connection that is gone (ASGI: a server-specific ``OSError``)."""


class _InfoAsDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets' INFO lines per connection ("connection open/closed") as DEBUG: the
    service logs its own "connection opened/closed"."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.debug(msg, *args, **kwargs)


class WebSocketLayer:
    """What the connections of one server share: limits, routes, the keepalive wheel,
    interned addresses and the set of open connections (for graceful shutdown).

    Built by ``server.config.ws_protocol``; bound to the uvicorn config the first time
    uvicorn constructs a connection (the loaded app, root path, size and ping
    settings are read from the documented ``uvicorn.Config`` settings).
    """

    def __init__(
        self,
        *,
        max_fragments: int = 4096,
        max_pings_per_second: float = 5.0,
        ping_burst: int = 20,
        fast_path: bool = True,
        routes: NativeRoutes | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        self.max_fragments = max_fragments
        self.max_pings_per_second = max_pings_per_second
        self.ping_burst = ping_burst
        self.fast_path = fast_path
        self.routes: NativeRoutes = dict(routes) if routes and fast_path else {}
        self.close_timeout = close_timeout
        self.connections: set[WebSocketProtocol] = set()
        #: Set during shutdown, done when the last connection is lost.
        self.closed_all: asyncio.Future[None] | None = None
        self.addrs: dict[Any, Any] = {}
        self.ws_logger = _InfoAsDebug(logging.getLogger("football_realtime.ws"), {})
        self.config: Any = None
        #: Headers of every handshake response (uvicorn's ``server_header`` and
        #: ``headers`` settings); ``date_header``: keep websockets' Date header.
        self.response_headers: list[tuple[str, str]] = []
        self.date_header = True
        self.app_state: dict[str, Any] = {}
        self.app: Any = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.keepalive: TimerWheel[WebSocketProtocol] = None  # type: ignore[assignment]
        self.root_path = ""
        self.asgi_version = "3.0"
        self.max_size: int | None = None
        self.ping_interval: float | None = None
        self.ping_timeout: float | None = None
        self.access_log = True

    def bind(self, config: Any, app_state: dict[str, Any]) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app_state = app_state
        headers = [(name.lower(), value) for name, value in config.headers]
        if config.server_header and not any(name == "server" for name, _ in headers):
            headers.insert(0, ("server", "uvicorn"))
        self.response_headers = headers
        self.date_header = config.date_header
        self.app = config.loaded_app
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.max_size = config.ws_max_size
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.access_log = config.access_log
        loop = asyncio.get_running_loop()
        if self.keepalive is None or self.loop is not loop:
            # Keepalive deadlines of all connections on one timer (a loop timer per
            # connection per ping and per pong wait costs ~600 bytes per idle
            # connection). The tick is a tenth of the shorter of the ping interval and
            # timeout, between 10 ms and 1 s: deadlines are at most that late.
            pi, pt = self.ping_interval, self.ping_timeout
            tick = min(x for x in (pi, pt, 10.0) if x is not None and x > 0) / 10
            self.loop = loop
            self.keepalive = TimerWheel(loop, min(max(tick, 0.01), 1.0), _keepalive_due)

    def forget(self, proto: WebSocketProtocol) -> None:
        self.connections.discard(proto)
        if not self.connections and self.closed_all is not None and not self.closed_all.done():
            self.closed_all.set_result(None)

    async def shutdown(self, timeout: float) -> None:
        """Graceful shutdown: every open connection says goodbye (the app's
        ``on_shutdown``, then close 1012; or 1012 alone), then waits up to ``timeout``
        seconds for the sockets to close; what is left is aborted."""
        for proto in list(self.connections):
            proto.shutdown()
        if self.connections:
            self.closed_all = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed_all), timeout)
        for proto in list(self.connections):
            proto.transport.abort()
        if self.keepalive is not None:
            self.keepalive.close()


def _keepalive_due(proto: WebSocketProtocol) -> None:
    proto.keepalive_slot = 0
    proto.keepalive_due()


class _Inbox:
    """What the ASGI ``receive`` reads: asyncio.Queue's interface, without its three
    deques and futures per connection. Single consumer (the connection's task)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        # A list, not a deque: reading pauses after each message, so it holds one or two.
        self._items: list[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = []
        self._items.append(item)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            w = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await w
            finally:
                if self._waiter is w:
                    self._waiter = None
        items = self._items
        item = items.pop(0)
        if not items:
            self._items = None
        return item


class _Flag:
    """asyncio.Event's interface; the waiter list exists only while someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        ws = self._waiters
        if ws:
            self._waiters = None
            for w in ws:
                if not w.done():
                    w.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        w = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(w)
        await w


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

#: An empty final continuation frame (masked, as from a client).
_END_OF_MESSAGE = b"\x80\x80\x00\x00\x00\x00"
_BAD_REQUEST_TEXT = "Failed to open a WebSocket connection: invalid HTTP request.\n"


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection. ``layer`` (the per-server state) is set on the class
    ``server.config.ws_protocol`` makes for each server."""

    layer: ClassVar[WebSocketLayer]

    __slots__ = (
        "client",
        "close_sent",
        "close_timer",
        "conn",
        "disconnected",
        "frag_open",
        "frag_skip",
        "frag_tail",
        "frames",
        "handshake_complete",
        "inbox",
        "initial_response",
        "keepalive_slot",
        "last_ping_rtt",
        "last_received",
        "on_lost",
        "on_shutdown",
        "on_writable",
        "partial_dropped",
        "pending_ping",
        "ping_sent_at",
        "pings",
        "read_paused",
        "response",
        "scope",
        "server",
        "task",
        "text",
        "transport",
        "utf8",
        "writable",
        "write_paused",
    )

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
        self.initial_response: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.inbox = _Inbox()
        # Created when writing first pauses.
        self.writable: _Flag | None = None
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
        # Keepalive, on the layer's wheel.
        self.keepalive_slot = 0
        self.pending_ping: bytes | None = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0
        self.last_received = 0.0
        # Created at the first ping (most clients never send one).
        self.pings: TokenBucket | None = None
        # A message in several frames being received: its frames, and for text the
        # per text message, not per idle connection).
        self.frames: list[Any] | None = None
        self.text = False
        self.utf8: codecs.IncrementalDecoder | None = None
        # Frame boundaries as read so far (see _boundaries).
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
        data = self._boundaries(data)
        if not data:
            return
        conn.receive_data(data)
        peer_closed = self.handle_events(conn.events_received())
        self._flush(conn, peer_closed)

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = _Flag()
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
        lost, self.on_lost = self.on_lost, None
        if lost is not None:
            lost()  # stop writing to a dead transport before the endpoint task notices
        self.stop_keepalive()
        code = 1005 if self.handshake_complete and self.initial_response is None else 1006
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": code})
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
        conn = ServerProtocol(max_size=layer.max_size, logger=layer.ws_logger)
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

    def _refuse(self, output: bytes) -> None:
        self.handshake_complete = self.close_sent = True
        self.transport.write(output)
        self.transport.close()

    def _respond(self, response: Response) -> None:
        """Send an HTTP response instead of accepting, and close."""
        conn = self.conn
        assert conn is not None
        conn.send_response(response)
        self.response = None
        self._refuse(b"".join(conn.data_to_send()))

    # -- ASGI --------------------------------------------------------------------

    async def run_asgi(self) -> None:
        layer = self.layer
        scope = self.scope
        assert scope is not None
        app = layer.routes.get(scope["path"]) or layer.app
        try:
            result = await app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            access_logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                access_logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                access_logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None:
            self.transport.close()

    def send_500_response(self) -> None:
        conn = self.conn
        if self.initial_response or self.handshake_complete or conn is None:
            return
        if conn.close_expected():  # a response was sent already
            return
        conn.send_response(conn.reject(500, "Internal Server Error"))
        self.transport.write(b"".join(conn.data_to_send()))

    async def receive(self) -> Any:
        message = await self.inbox.get()
        if self.read_paused and self.inbox.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    def _handshake_line(self, outcome: str) -> None:
        # One per handshake: an access-log line, so it follows ``access_log``.
        if self.layer.access_log:
            scope = self.scope
            assert scope is not None
            client = scope.get("client")
            path = scope["raw_path"].decode("latin1")
            if scope["query_string"]:
                path = f"{path}?{scope['query_string'].decode('ascii')}"
            access_logger.info(
                '%s - "WebSocket %s" %s',
                f"{client[0]}:{client[1]}" if client else "",
                path.replace('"', "%22"),
                outcome,
            )

    async def send(self, message: Any) -> None:
        writable = self.writable
        if writable is not None and not writable.is_set():
            await writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        kind = message["type"]
        conn = self.conn
        assert conn is not None
        if not self.handshake_complete and self.initial_response is None:
            if kind == "websocket.accept":
                self._handshake_line("[accepted]")
                response = self.response
                assert response is not None
                layer = self.layer
                headers = layer.response_headers + [
                    (name.decode("latin-1").lower(), value.decode("latin-1"))
                    for name, value in message.get("headers", [])
                ]
                subprotocol = message.get("subprotocol")
                if subprotocol:
                    headers.append(("Sec-WebSocket-Protocol", subprotocol))
                if not layer.date_header:
                    del response.headers["Date"]
                response.headers.update(headers)
                self.response = None  # sent; not needed any more
                if not self.transport.is_closing():
                    self.handshake_complete = True
                    conn.send_response(response)
                    self.transport.write(b"".join(conn.data_to_send()))
                    self.start_keepalive()
            elif kind == "websocket.close":
                # Closing before accepting: HTTP 403.
                self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
                self._handshake_line("403")
                self._respond(conn.reject(HTTPStatus.FORBIDDEN, ""))
            elif kind == "websocket.http.response.start" and self.initial_response is None:
                status = message["status"]
                if not (100 <= status < 600):
                    raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
                self._handshake_line(str(status))
                headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in list(message.get("headers", []))
                ]
                self.initial_response = (status, headers, b"")
                self.handshake_complete = True
                self.response = None
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' "
                    f"or 'websocket.http.response.start' but got '{kind}'."
                )
        elif not self.close_sent and self.initial_response is None:
            try:
                if kind == "websocket.send":
                    data = message.get("bytes")
                    if data is not None:
                        conn.send_binary(data)
                    else:
                        text = message.get("text")
                        if text is not None:
                            conn.send_text(text.encode())
                    self.transport.write(b"".join(conn.data_to_send()))
                elif kind == "websocket.close":
                    if not self.transport.is_closing():
                        code = message.get("code", 1000)
                        reason = message.get("reason", "") or ""
                        self.inbox.put_nowait(
                            {"type": "websocket.disconnect", "code": code, "reason": reason}
                        )
                        conn.send_close(code, reason)
                        self.transport.write(b"".join(conn.data_to_send()))
                        self.close_sent = True
                        if self.read_paused:
                            self.read_paused = False
                            self.transport.resume_reading()
                        self.close_timer = self.layer.loop.call_later(
                            self.layer.close_timeout, self.transport.close
                        )
                else:
                    raise RuntimeError(
                        "Expected ASGI message 'websocket.send' or 'websocket.close', "
                        f"but got '{kind}'."
                    )
            except InvalidState:
                raise ClientDisconnected() from None
        elif self.initial_response is not None:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
                )
            status, headers, body = self.initial_response
            body += message["body"]
            self.initial_response = (status, headers, body)
            if not message.get("more_body", False):
                head = Headers(headers)
                head.setdefault("Date", formatdate(usegmt=True))
                head.setdefault("Connection", "close")
                head.setdefault("Content-Length", str(len(body)))
                head.setdefault("Content-Type", "text/plain; charset=utf-8")
                try:
                    phrase = HTTPStatus(status).phrase
                except ValueError:
                    phrase = ""
                self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
                self._respond(Response(status, phrase, head, body))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )

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

    # -- frames --------------------------------------------------------------------

    def _boundaries(self, data: bytes) -> bytes:
        """Follow frame boundaries in what the client sends, to find a close frame in
        the middle of a fragmented message: an empty final continuation frame is put
        before it, so websockets ends the message (dropped in handle_cont) and echoes
        the close. Bytes of a frame header not complete yet are held back until it is."""
        if self.frag_tail:
            data = self.frag_tail + data
            self.frag_tail = b""
        pos = self.frag_skip
        n = len(data)
        if pos >= n:
            self.frag_skip = pos - n
            return data
        pieces: list[bytes] | None = None
        start = 0
        while pos < n:
            if n - pos < 2:
                break
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            head = 2 + (4 if data[pos + 1] & 0x80 else 0)
            if length == 126:
                head += 2
            elif length == 127:
                head += 8
            if n - pos < head:
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            opcode = b0 & 0x0F
            if opcode == 0x8:
                if self.frag_open:
                    if pieces is None:
                        pieces = []
                    pieces += [data[start:pos], _END_OF_MESSAGE]
                    start = pos
                    self.partial_dropped = True
                    self.frag_open = False
            elif opcode in (0x1, 0x2):
                self.frag_open = not b0 & 0x80
            elif opcode == 0x0 and b0 & 0x80:
                self.frag_open = False
            pos += head + length
        if pos > n:
            self.frag_skip = pos - n
        else:
            self.frag_skip = 0
            if pos < n:
                self.frag_tail = data[pos:]
                data = data[:pos]
        if pieces is not None:
            pieces.append(data[start:])
            return b"".join(pieces)
        return data

    def handle_events(self, events: list[Any]) -> bool:
        """Act on the frames of one read; True if the peer's close frame was among them."""
        # websockets has already queued a pong for every ping in this read: charge the
        # pings up front.
        pings = 0
        for e in events:
            if e.opcode is Opcode.PING:
                pings += 1
        if pings:
            layer = self.layer
            now = layer.loop.time()
            bucket = self.pings
            if bucket is None:
                bucket = self.pings = TokenBucket(layer.max_pings_per_second, layer.ping_burst, now)
            if not all([bucket.take(now) for _ in range(pings)]):
                assert self.conn is not None
                self.conn.data_to_send()  # drop the queued pongs
                self.fail(1008, "too many pings")
                return False
        peer_closed = False
        for event in events:
            opcode = event.opcode
            if opcode is Opcode.TEXT:
                self.handle_text(event)
            elif opcode is Opcode.CONT:
                self.handle_cont(event)
            elif opcode is Opcode.BINARY:
                self.handle_bytes(event)
            elif opcode is Opcode.PONG:
                self.handle_pong(event)
            elif opcode is Opcode.CLOSE:
                peer_closed = True
                self.handle_close(event)
            # PING: websockets queued the pong; _flush writes it.
        return peer_closed

    def _flush(self, conn: ServerProtocol, peer_closed: bool) -> None:
        out = conn.data_to_send()
        if not out:
            return
        data = b"".join(out)
        if data and not self.transport.is_closing():
            self.transport.write(data)
        if b"" not in out:  # websockets.protocol.SEND_EOF: close the TCP connection
            return
        if not self.close_sent:
            # websockets ended the connection: the peer's close frame (echoed), or a
            # failure (framing, size, ...; its close frame sent). Nothing more is read;
            # the connection is CLOSED and its close codes known.
            conn.receive_eof()
            if peer_closed:
                code, reason = conn.close_code, conn.close_reason
            else:
                sent = conn.close_exc.sent
                code, reason = (sent.code, sent.reason) if sent is not None else (1006, "")
                self.close_sent = True
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.close()

    def deliver(self, message: dict[str, Any]) -> None:
        if self.close_sent:
            # The app is past `websocket.close`: discard the message rather than queue
            # it, so reads stay active until the peer's close reply arrives.
            return
        self.inbox.put_nowait(message)
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    # Text is validated frame by frame (an invalid fragment fails at once with 1007,
    # RFC 6455 §8.1) and decoded once.

    def handle_text(self, event: Frame) -> None:
        if self.close_sent:
            return
        self.text = True
        if event.fin:  # the common case: one frame, decoded at once
            try:
                text = str(event.data, "utf-8")
            except UnicodeDecodeError as exc:
                self.fail(1007, f"invalid UTF-8 at position {exc.start}")
                return
            self.deliver({"type": "websocket.receive", "text": text})
            return
        self.utf8 = _Utf8Decoder()
        self.frames = []
        self._text_piece(event)

    def handle_bytes(self, event: Frame) -> None:
        if self.close_sent:
            return
        self.text = False
        if event.fin:
            self.deliver({"type": "websocket.receive", "bytes": bytes(event.data)})
        else:
            self.frames = [event.data]

    def handle_cont(self, event: Frame) -> None:
        frames = self.frames
        if self.partial_dropped:
            # The end put before a close frame: the partial message is dropped.
            self.partial_dropped = False
            self.frames = self.utf8 = None
            return
        if self.close_sent or frames is None:
            return
        if len(frames) >= self.layer.max_fragments:
            self.fail(1009, f"message has more than {self.layer.max_fragments} fragments")
            return
        if self.text:
            self._text_piece(event)
            return
        frames.append(event.data)
        if event.fin:
            self.frames = None
            self.deliver({"type": "websocket.receive", "bytes": b"".join(frames)})

    def _text_piece(self, event: Frame) -> None:
        frames = self.frames
        assert self.utf8 is not None and frames is not None  # set by handle_text
        try:
            piece = self.utf8.decode(event.data, event.fin)
        except UnicodeDecodeError as exc:
            self.fail(1007, f"invalid UTF-8 at position {exc.start}")
            return
        frames.append(piece)
        if event.fin:
            self.frames = self.utf8 = None
            self.deliver({"type": "websocket.receive", "text": "".join(frames)})

    def handle_close(self, event: Frame) -> None:
        if self.close_sent and self.close_timer is not None:
            # The peer answered our close frame: the closing handshake is complete.
            self.close_timer.cancel()
            self.close_timer = None
            self.transport.close()
        # Otherwise websockets queued the echo and the end of the stream: _flush sends
        # both and tells the app the peer's code and reason.

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection from the reading side: close frame, then drop TCP."""
        conn = self.conn
        assert conn is not None
        self.frames = self.utf8 = None
        if self.close_sent:
            return
        conn.fail(code, reason)
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    # -- keepalive on the layer's wheel ------------------------------------------------

    def start_keepalive(self) -> None:
        interval = self.layer.ping_interval
        if interval is not None and interval > 0:
            self.schedule_ping()

    def stop_keepalive(self) -> None:
        self.layer.keepalive.remove(self, self.keepalive_slot)
        self.keepalive_slot = 0
        self.pending_ping = None

    def schedule_ping(self) -> None:
        layer = self.layer
        assert layer.ping_interval is not None
        delay = max(0.0, layer.ping_interval - self.last_ping_rtt)
        self.keepalive_slot = layer.keepalive.add(
            self, layer.loop.time() + delay, self.keepalive_slot
        )

    def keepalive_due(self) -> None:
        if self.pending_ping is None:
            self.send_keepalive_ping()
        else:
            self.keepalive_timeout()

    def send_keepalive_ping(self) -> None:
        conn = self.conn
        if conn is None or self.close_sent or self.transport.is_closing():
            return
        layer = self.layer
        # Random payload: handle_pong ignores stale or unsolicited pongs.
        self.pending_ping = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = layer.loop.time()
        conn.send_ping(self.pending_ping)
        self.transport.write(b"".join(conn.data_to_send()))
        if layer.ping_timeout is not None:
            self.keepalive_slot = layer.keepalive.add(
                self, self.ping_sent_at + layer.ping_timeout, self.keepalive_slot
            )
        else:
            self.schedule_ping()

    def handle_pong(self, event: Frame) -> None:
        if self.pending_ping is None or bytes(event.data) != self.pending_ping:
            return
        self.last_ping_rtt = self.layer.loop.time() - self.ping_sent_at
        self.pending_ping = None
        if self.layer.ping_timeout is not None:
            self.schedule_ping()

    def keepalive_timeout(self) -> None:
        self.pending_ping = None
        conn = self.conn
        if conn is None or self.close_sent or self.transport.is_closing():
            return
        # Anything received since the ping proves the peer alive (browsers cannot send
        # pings, but they send application heartbeats).
        if self.last_received > self.ping_sent_at:
            self.schedule_ping()
            return
        conn.fail(1011, "keepalive ping timeout")
        self.transport.write(b"".join(conn.data_to_send()))
        self.close_sent = True
        self.transport.close()


__all__ = ["ClientDisconnected", "NativeRoutes", "WebSocketLayer", "WebSocketProtocol"]
