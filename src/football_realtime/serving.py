"""How uvicorn runs the service: one place for the server options we ship.

``football-realtime serve`` and the test harness both build their uvicorn config
here, so tests run the same WebSocket layer, limits and timeouts as production.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import uvicorn

from .config import Settings
from .wsprotocol import RealtimeWebSocketProtocol

log = logging.getLogger("football_realtime.serving")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] installs httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 24\r\nconnection: close\r\n\r\nrequest headers too slow"
)

_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 25\r\nconnection: close\r\n\r\nrequest headers too large"
)


if HttpToolsProtocol is not None:

    class HandshakeTimeoutProtocol(HttpToolsProtocol):
        """uvicorn's HTTP protocol plus a deadline for complete request headers.

        uvicorn alone keeps a connection that sends nothing, or one header byte per
        second (slowloris), open indefinitely. Here the headers of each request
        (WebSocket upgrades included) must be complete within ``handshake_timeout``
        seconds of the connection opening or the request starting; otherwise the
        server answers 408 and closes the TCP connection.
        """

        handshake_timeout = 10.0
        #: Bytes of request line and headers one request may send (431 past that);
        #: httptools itself has no limit.
        max_header_bytes = 65536

        def connection_made(self, transport: Any) -> None:
            self._header_timer: Any = None
            self._header_bytes = 0
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            pending = self._header_timer is not None
            super().data_received(data)
            if pending and self._header_timer is not None:
                self._header_bytes += len(data)
                if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
                    self._disarm()
                    self.transport.write(_HEADERS_TOO_LARGE)
                    self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self) -> None:
            # Our WebSocket layer takes the request as httptools parsed it; uvicorn
            # would serialise it again for websockets to parse a second time.
            cls = self.ws_protocol_class
            if not (isinstance(cls, type) and issubclass(cls, RealtimeWebSocketProtocol)):
                super().handle_websocket_upgrade()
                return
            scope = self.scope
            headers = cast(list[tuple[bytes, bytes]], scope["headers"])
            protocol = cls(
                config=self.config, server_state=self.server_state, app_state=self.app_state
            )
            self.connections.discard(self)
            protocol.connection_made(self.transport)
            if not protocol.open_from_parsed(
                scope["method"], scope["http_version"], self.url, headers
            ):
                output = [scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
                for name, value in headers:
                    output += [name, b": ", value, b"\r\n"]
                output.append(b"\r\n")
                protocol.data_received(b"".join(output))
            self.transport.set_protocol(protocol)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_bytes = 0
                self._header_timer = self.loop.call_later(
                    self.handshake_timeout, self._headers_too_slow
                )

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            log.info(
                "closing %s: request headers not complete within %ss",
                client,
                self.handshake_timeout,
            )
            self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()


def http_protocol(settings: Settings) -> Any:
    if HttpToolsProtocol is None:  # pragma: no cover
        log.warning("httptools is missing: REALTIME_HANDSHAKE_TIMEOUT is not enforced")
        return "auto"
    return type(
        "HandshakeTimeoutProtocol",
        (HandshakeTimeoutProtocol,),
        {"handshake_timeout": settings.handshake_timeout},
    )


def ws_protocol(settings: Settings, fast: bool | None = None, app: Any = None) -> Any:
    """Our WebSocket layer, with direct frame writes unless ``fast`` (default
    REALTIME_FAST_TRANSPORT) is false; its limits and fixes apply either way. With the
    fast path, ``app``'s own WebSocket routes are called directly (``for_app``)."""
    return RealtimeWebSocketProtocol.with_limits(
        max_fragments=settings.max_fragments,
        max_pings_per_second=settings.max_pings_per_second,
        fast_path=fast if fast is not None else settings.fast_transport,
    ).for_app(app)


def uvicorn_config(
    app: Any,
    settings: Settings,
    *,
    fast: bool | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    **overrides: Any,
) -> uvicorn.Config:
    """The uvicorn configuration we ship, for ``app`` built from ``settings``."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": http_protocol(settings),
        "ws": ws_protocol(settings, fast, app),
        "ws_max_size": settings.max_message_size,
        "ws_ping_interval": settings.ping_interval,
        "ws_ping_timeout": settings.ping_timeout,
        # Off: compression costs memory per connection and opens decompression bombs.
        "ws_per_message_deflate": False,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "ssl_certfile": ssl_certfile,
        "ssl_keyfile": ssl_keyfile,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


__all__ = ["http_protocol", "uvicorn_config", "ws_protocol"]
