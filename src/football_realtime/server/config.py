"""How uvicorn runs the service: one place for the server options we ship.

``football-realtime serve`` and the test harness both build their uvicorn config
here, so tests run the same WebSocket layer, limits and timeouts as production.
Everything reaches uvicorn through documented ``uvicorn.Config`` settings: ``http``
and ``ws`` take our protocol classes, the app is wrapped for graceful shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from ..config import Settings
from .websocket_layer import NativeRoutes, WebSocketLayer
from .websocket_protocol import WebSocketProtocol

log = logging.getLogger("football_realtime.serving")


def http_protocol(settings: Settings) -> Any:
    """uvicorn's httptools protocol with a deadline (REALTIME_HANDSHAKE_TIMEOUT) and a
    size limit for request headers (``http_protocol.HeaderDeadline``)."""
    try:
        from .http_protocol import HeaderDeadline
    except ImportError:  # pragma: no cover - uvicorn[standard] installs httptools
        log.warning("httptools is missing: REALTIME_HANDSHAKE_TIMEOUT is not enforced")
        return "auto"
    return type(
        "HeaderDeadline",
        (HeaderDeadline,),
        {"__slots__": (), "handshake_timeout": settings.handshake_timeout},
    )


def ws_protocol(
    settings: Settings, fast: bool | None = None, routes: NativeRoutes | None = None
) -> type[WebSocketProtocol]:
    """Our WebSocket layer for one server: a protocol class carrying the state its
    connections share (``WebSocketLayer``: limits, routes, keepalive wheel).

    Direct frame writes are offered unless ``fast`` (default REALTIME_FAST_TRANSPORT)
    is false; the limits and fixes apply either way. With the fast path, ``routes``
    (path -> ASGI app, e.g. ``Realtime.ws_routes()``) are called directly, without
    the app's middleware stack; every other path goes through the app.
    """
    layer = WebSocketLayer(
        max_fragments=settings.max_fragments,
        max_pings_per_second=settings.max_pings_per_second,
        fast_path=fast if fast is not None else settings.fast_transport,
        routes=routes,
    )
    return type(
        "RealtimeWebSocketProtocol", (WebSocketProtocol,), {"__slots__": (), "layer": layer}
    )


class GracefulShutdown:
    """The ASGI app, with the WebSocket layer's graceful shutdown run when the app is
    told to shut down (lifespan), before the app's own shutdown: every connection on
    our layer gets the app's goodbye (``on_shutdown``: ``connection_status`` closing)
    and close 1012, and the sockets get up to ``timeout`` seconds to close."""

    def __init__(self, app: Any, layer: WebSocketLayer, timeout: float | None) -> None:
        self.app = app
        self.layer = layer
        self.timeout = timeout

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        # Not a coroutine function: every other scope goes to the app without a frame
        # of ours for its lifetime (uvicorn is told the interface is ASGI 3).
        if scope["type"] == "lifespan":
            return self.app(scope, self._receive(receive), send)  # type: ignore[no-any-return]
        return self.app(scope, receive, send)  # type: ignore[no-any-return]

    def _receive(self, receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def hooked() -> Any:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                timeout = self.timeout if self.timeout is not None else float("inf")
                await self.layer.shutdown(timeout)
            return message

        return hooked


def uvicorn_config(
    app: Any,
    settings: Settings,
    *,
    fast: bool | None = None,
    routes: NativeRoutes | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    **overrides: Any,
) -> uvicorn.Config:
    """The uvicorn configuration we ship, for ``app`` built from ``settings``;
    ``routes``: the service's own WebSocket routes, called directly (``ws_protocol``)."""
    ws = ws_protocol(settings, fast, routes)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": http_protocol(settings),
        "ws": ws,
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
        "interface": "asgi3",
    }
    options.update(overrides)
    wrapped = GracefulShutdown(app, ws.layer, options["timeout_graceful_shutdown"])
    return uvicorn.Config(wrapped, **options)


__all__ = ["GracefulShutdown", "http_protocol", "uvicorn_config", "ws_protocol"]
