"""What the WebSocket connections of one server share (``WebSocketLayer``).

Limits, the service's own routes, the keepalive timer wheel, interned addresses and
the set of open connections for graceful shutdown. One layer per server, built by
``server.config.ws_protocol`` and bound to uvicorn's documented ``Config`` settings
the first time uvicorn constructs a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from websockets.extensions import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from ..timerwheel import TimerWheel

#: ASGI apps called directly for their exact path, instead of the app's full stack.
NativeRoutes = Mapping[str, Callable[[Any, Any, Any], Awaitable[None]]]

#: The LZ77 window a client may use for the messages it compresses, when it lets the
#: server choose (it offers ``client_max_window_bits``, as browsers, websockets and
#: Node ``ws`` do): 4 KiB instead of 32 KiB to inflate one of its messages. Client
#: messages are small JSON requests; the ratio does not suffer.
CLIENT_MAX_WINDOW_BITS = 12


def deflate_extensions() -> list[ServerExtensionFactory]:
    """The permessage-deflate offer a server with compression accepts (RFC 7692).

    * ``server_no_context_takeover``: each server message is compressed on its own, so
      one compressed frame serves every connection (and no compressor is kept per
      connection);
    * ``client_no_context_takeover``: the client's messages too, so no inflater is
      kept per connection between messages either (an idle connection holds no zlib
      state);
    * ``client_max_window_bits`` = :data:`CLIENT_MAX_WINDOW_BITS` when the client
      offers the parameter; a client that does not gets the RFC's 15 bits.

    A client that asks for ``server_max_window_bits`` below 15 still negotiates (its
    own messages are inflated), but receives uncompressed frames (see
    :func:`shared_frames_allowed`). Inflated sizes are bounded by the message size
    limit while inflating (websockets' ``PerMessageDeflate.decode`` is given the
    remaining ``max_size``): a deflate bomb closes with 1009.
    """
    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            client_max_window_bits=CLIENT_MAX_WINDOW_BITS,
        )
    ]


def _deflate_params(extensions_header: str | None) -> dict[str, str] | None:
    """The parameters of a handshake response's ``Sec-WebSocket-Extensions`` value
    (name to unquoted value, ``""`` when it has none) when it negotiated
    permessage-deflate; None otherwise."""
    if not extensions_header:
        return None
    name, *params = (part.strip() for part in extensions_header.split(";"))
    if name != "permessage-deflate":
        return None
    out: dict[str, str] = {}
    for param in params:
        key, _, value = param.partition("=")
        out[key.strip()] = value.strip().strip('"')
    return out


def shared_frames_allowed(extensions_header: str | None) -> bool:
    """Whether a handshake response's ``Sec-WebSocket-Extensions`` value lets the server
    send the shared compressed frames: permessage-deflate with
    ``server_no_context_takeover`` and no ``server_max_window_bits`` below 15."""
    params = _deflate_params(extensions_header)
    return (
        params is not None
        and "server_no_context_takeover" in params
        and params.get("server_max_window_bits", "15") == "15"
    )


def client_inflate_bits(extensions_header: str | None) -> int:
    """The window bits the client compresses each message with on its own, when a
    handshake response's ``Sec-WebSocket-Extensions`` value negotiated permessage-deflate
    with ``client_no_context_takeover`` (``client_max_window_bits``, 15 if not given);
    0 otherwise (no compression, or an inflater kept across messages)."""
    params = _deflate_params(extensions_header)
    if params is None or "client_no_context_takeover" not in params:
        return 0
    value = params.get("client_max_window_bits", "")
    bits = int(value) if value.isdigit() else 15
    return bits if 8 <= bits <= 15 else 0


class KeepaliveItem(Protocol):
    """What the keepalive wheel needs of a connection: its slot, and what to do when
    its deadline comes."""

    keepalive_slot: int

    def __hash__(self) -> int: ...

    def keepalive_due(self) -> None: ...


class LayerConnection(Protocol):
    """What graceful shutdown needs of a connection: a goodbye, and its transport to
    abort if the goodbye takes too long."""

    transport: asyncio.Transport

    def __hash__(self) -> int: ...

    def shutdown(self) -> None: ...


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
        compression: bool = False,
    ) -> None:
        self.max_fragments = max_fragments
        self.max_pings_per_second = max_pings_per_second
        self.ping_burst = ping_burst
        self.fast_path = fast_path
        self.routes: NativeRoutes = dict(routes) if routes and fast_path else {}
        self.close_timeout = close_timeout
        #: The extensions offered to websockets' handshake (permessage-deflate when
        #: ``compression``; see :func:`deflate_extensions`), shared by every connection.
        self.extensions: list[ServerExtensionFactory] | None = (
            deflate_extensions() if compression else None
        )
        self.connections: set[LayerConnection] = set()
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
        self.keepalive: TimerWheel[KeepaliveItem] = None  # type: ignore[assignment]
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

    def forget(self, proto: LayerConnection) -> None:
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


def _keepalive_due(proto: KeepaliveItem) -> None:
    proto.keepalive_slot = 0
    proto.keepalive_due()


__all__ = [
    "CLIENT_MAX_WINDOW_BITS",
    "KeepaliveItem",
    "LayerConnection",
    "NativeRoutes",
    "WebSocketLayer",
    "deflate_extensions",
    "shared_frames_allowed",
]
