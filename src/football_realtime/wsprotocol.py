"""Our uvicorn WebSocket protocol: uvicorn's websockets-sansio layer plus a fast send path.

``football-realtime serve`` runs uvicorn with ``ws=RealtimeWebSocketProtocol.for_app(app)``.
It behaves like uvicorn's ``websockets-sansio`` implementation (same parser, limits and
handshake) and adds, through the ASGI scope extension ``football_realtime.transport``:

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
  ``Sec-WebSocket-Version: 13`` for other protocol versions (RFC 6455 §4.4);
* lean per-connection state (measured in docs/performance.md): the service's own
  WebSocket routes are called directly instead of through the app's middleware and
  router (``for_app``), the receive queue and the writable flag are small objects that
  allocate only when a task waits on them, and the handshake request and response
  are dropped once the connection is open. Every other route (and every app without
  registered routes) runs through the ASGI app exactly as in uvicorn.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import logging
import random
import re
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

from .core.limits import TokenBucket
from .timerwheel import TimerWheel

EXTENSION = "football_realtime.transport"

#: ASGI apps called directly for their exact path, instead of the app's full stack.
NativeRoutes = Mapping[str, Callable[[Any, Any, Any], Awaitable[None]]]


class _InfoAsDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs "connection open" / "connection closed" at INFO for every
    connection, next to the service's own "connection opened/closed" lines; here they
    are DEBUG lines (one log line costs about as much as the rest of the handshake)."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.debug(msg, *args, **kwargs)


_protocol_logger = _InfoAsDebug(logging.getLogger("football_realtime.ws"), {})


class _HandshakeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """uvicorn's logger for this protocol. Its INFO lines are one per handshake
    (``"WebSocket /path" [accepted]``, ``403``): access-log lines, so they follow the
    ``access_log`` setting; warnings and errors pass unchanged."""

    def __init__(self, logger: logging.Logger, access_log: bool) -> None:
        super().__init__(logger, {})
        self.access_log = access_log

    @property
    def level(self) -> int:
        return int(self.logger.level)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.access_log:
            self.logger.info(msg, *args, **kwargs)


@functools.lru_cache(maxsize=8)
def _handshake_log(logger: logging.Logger, access_log: bool) -> _HandshakeLog:
    return _HandshakeLog(logger, access_log)  # one per setting, not one per connection


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


def _keepalive_due(proto: RealtimeWebSocketProtocol) -> None:
    proto.keepalive_slot = 0
    proto.keepalive_due()


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    # Slots for uvicorn's attributes too: its ~40 instance attributes would otherwise
    # make each connection's __dict__ a 1.5 KB unshared table.
    __slots__ = (
        *[
            "app",
            "asgi_version",
            "app_state",
            "client",
            "close_sent",
            "close_timeout",
            "close_timer",
            "config",
            "conn",
            "connections",
            "curr_msg_data_type",
            "default_headers",
            "disconnected",
            "frames",
            "handshake_complete",
            "handshake_initiated",
            "initial_response",
            "last_ping_rtt",
            "loop",
            "logger",
            "pending_ping_payload",
            "ping_interval",
            "ping_sent_at",
            "ping_timeout",
            "ping_timer",
            "pong_timer",
            "queue",
            "read_paused",
            "request",
            "response",
            "root_path",
            "scheme",
            "scope",
            "server",
            "tasks",
            "transport",
            "writable",
        ],
        "addrs",
        "keepalive",
        "keepalive_slot",
        "last_received",
        "on_lost",
        "on_shutdown",
        "on_writable",
        "pings",
        "utf8",
        "write_paused",
    )
    native_routes: ClassVar[NativeRoutes] = {}
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
                "__slots__": (),
                "max_fragments": max_fragments,
                "max_pings_per_second": max_pings_per_second,
                "fast_path": fast_path,
            },
        )

    @classmethod
    def for_app(cls, app: Any) -> type[RealtimeWebSocketProtocol]:
        """This class bound to ``app``'s WebSocket routes (``app.state.realtime_ws_routes``,
        set by ``create_app``): those are called directly, the rest through ``app``."""
        state = getattr(app, "state", None)
        routes = getattr(state, "realtime_ws_routes", None) if state is not None else None
        if not routes or not cls.fast_path:
            return cls
        return type(cls.__name__, (cls,), {"__slots__": (), "native_routes": dict(routes)})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        state = kwargs.get("server_state", args[1] if len(args) > 1 else None)
        wheel = getattr(state, "realtime_keepalive", None)
        if wheel is None:
            # Keepalive deadlines of all connections on one timer (uvicorn arms a loop
            # timer per connection per ping and per pong wait, ~600 bytes per idle
            # connection). The tick is a tenth of the shorter of the ping interval and
            # timeout, between 10 ms and 1 s: deadlines are at most that late.
            pi, pt = self.ping_interval, self.ping_timeout
            tick = min(x for x in (pi, pt, 10.0) if x is not None and x > 0) / 10
            wheel = TimerWheel(self.loop, min(max(tick, 0.01), 1.0), _keepalive_due)
            if state is not None:
                state.realtime_keepalive = wheel
                state.realtime_addrs = {}
        self.keepalive: TimerWheel[RealtimeWebSocketProtocol] = wheel
        self.addrs = getattr(state, "realtime_addrs", None)
        self.keepalive_slot = 0
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        self.conn.logger = _protocol_logger
        self.conn.debug = _protocol_logger.isEnabledFor(logging.DEBUG)
        self.logger = _handshake_log(self.logger, self.config.access_log)  # type: ignore[assignment]
        self.write_paused = False
        self.on_writable: Callable[[bool], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self.last_received = 0.0
        # Graceful shutdown (SIGTERM): lets the app say goodbye before uvicorn's 1012.
        self.on_shutdown: Callable[[], None] | None = None
        self.pings = TokenBucket(self.max_pings_per_second, self.ping_burst, self.loop.time())
        # Created per text message (handle_text), not per idle connection.
        self.utf8: codecs.IncrementalDecoder | None = None
        self.conn.__class__ = _ServerProtocol

    def open_from_parsed(
        self, method: str, http_version: str, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bool:
        """Start the WebSocket handshake from the request as uvicorn's httptools parser
        read it, instead of uvicorn serialising it again for websockets to parse (a
        second parse of every handshake, ~10 % of an accept). Only for requests that
        websockets' parser would accept as they are; for anything else returns False
        and the caller feeds the bytes as uvicorn does (same refusals as before).
        """
        if (
            method != "GET"
            or http_version != "1.1"
            or len(headers) > _MAX_HEADERS
            or len(target) > _MAX_LINE
            or not target.isascii()
        ):
            return False
        h = Headers()
        for name, value in headers:
            if (
                name in _BODY_HEADERS
                or len(name) + len(value) > _MAX_LINE
                or not _TOKEN.fullmatch(name)
                or not _VALUE.fullmatch(value)
            ):
                return False
            h.set_insecure(name.decode("ascii"), value.decode("iso-8859-1"))
        self.last_received = self.loop.time()
        conn = self.conn
        # websockets' parser waits for the request line; give it its frame parser.
        conn.parser = Protocol.parse(conn)
        next(conn.parser)
        self.handle_connect(Request(target.decode("ascii"), h))
        return True

    def connection_made(self, transport: Any) -> None:
        # uvicorn's HTTP protocol hands the connection over from inside its parser's
        # callback; the parser holds bound methods of that protocol, a cycle only the
        # garbage collector frees (about 5 KB per accept). Its parsing is over: cut it.
        prev = transport.get_protocol()
        if isinstance(prev, HttpToolsProtocol):
            prev.parser = None  # type: ignore[assignment]
            # What uvicorn's connection_made does, with the addresses that protocol
            # already read from the socket (two system calls per accept less).
            self.connections.add(self)
            self.transport = transport
            self.server, self.client = prev.server, prev.client
            self.scheme = "wss" if prev.scheme == "https" else "ws"
        else:
            super().connection_made(transport)
        # One shared copy of the listening address and of each client host string.
        server, addrs = self.server, self.addrs
        if server is not None and addrs is not None:
            self.server = addrs.setdefault(server, server)
        client = self.client
        if client is not None:
            self.client = (sys.intern(client[0]), client[1])

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
        assert self.utf8 is not None  # set by handle_text
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
        pings = 0
        for e in events:
            if type(e) is Frame and e.opcode is Opcode.PING:
                pings += 1
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
        # websockets' parser keeps the request alive for the connection's lifetime; its
        # headers are already copied into the scope.
        event.headers.clear()
        self.request = None  # type: ignore[assignment]
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent and self.fast_path:
            scope["extensions"][EXTENSION] = {"protocol": self}

    async def run_asgi(self) -> None:
        route = self.native_routes.get(self.scope["path"])
        if route is None:
            await super().run_asgi()
            return
        # Same outcome handling as uvicorn's run_asgi, minus the app's middleware stack.
        try:
            await route(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
        if self.close_timer is None:
            self.transport.close()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            self.response = None  # type: ignore[assignment]  # sent; not needed any more

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
        lost, self.on_lost = self.on_lost, None
        if lost is not None:
            lost()  # stop writing to a dead transport before the endpoint task notices
        super().connection_lost(exc)

    def shutdown(self) -> None:
        cb, self.on_shutdown = self.on_shutdown, None
        if cb is not None and self.handshake_complete and not self.close_sent:
            cb()  # sends connection_status closing, then closes with 1012
        super().shutdown()

    # -- keepalive on the shared wheel (same behaviour as uvicorn's timers) ----------

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.keepalive_slot = self.keepalive.add(
            self, self.loop.time() + delay, self.keepalive_slot
        )

    def stop_keepalive(self) -> None:
        self.keepalive.remove(self, self.keepalive_slot)
        self.keepalive_slot = 0
        super().stop_keepalive()

    def keepalive_due(self) -> None:
        if self.pending_ping_payload is None:
            self.send_keepalive_ping()
        else:
            self.keepalive_timeout()

    def send_keepalive_ping(self) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        # Random payload: handle_pong ignores stale or unsolicited pongs.
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.ping_timeout is not None:
            self.keepalive_slot = self.keepalive.add(
                self, self.ping_sent_at + self.ping_timeout, self.keepalive_slot
            )
        else:
            self.schedule_ping()

    def handle_pong(self, event: Any) -> None:
        if self.pending_ping_payload is None or bytes(event.data) != self.pending_ping_payload:
            return
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping_payload = None
        self.schedule_ping()

    def keepalive_timeout(self) -> None:
        # Anything received since the ping proves the peer alive (browsers cannot send
        # pings, but they send application heartbeats).
        if self.last_received > self.ping_sent_at and not self.close_sent:
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

# What websockets' request parser accepts (websockets.http11), for open_from_parsed.
_MAX_HEADERS = 128
_MAX_LINE = 8000
_TOKEN = re.compile(rb"[-!#$%&\'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")
_BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))


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


__all__ = ["EXTENSION", "NativeRoutes", "RealtimeWebSocketProtocol", "protocol_of"]
