"""The app factory: :class:`Realtime` is the service with its HTTP and WebSocket edges;
:func:`create_app` wraps it in FastAPI.

Mount the service into an existing FastAPI app::

    realtime = Realtime(Settings())
    app = FastAPI(lifespan=realtime.lifespan)
    app.include_router(realtime.router, prefix="/realtime")

and publish from business code in the same process with ``await realtime.publish(event)``.
Add ``football_realtime.edges.metrics.mount_metrics(app, realtime)`` for ``GET /metrics``.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ._version import __version__
from .brokers import Broker
from .config import Settings
from .core.events import SubscriptionType
from .edges.body_limit import BodySizeLimit
from .edges.metrics import build_registry, metrics_router
from .edges.rest import build_api_router
from .edges.websocket import WebSocketEndpoint
from .logs import CorrelationIdMiddleware, bind_correlation_id, correlation_id_of
from .service.realtime import RealtimeService


class Realtime(RealtimeService):
    """The service plus its routes: ``router`` (WebSocket endpoints and REST, to mount
    under ``/realtime``), ``lifespan``, and a metrics registry of its own."""

    def __init__(self, settings: Settings | None = None, broker: Broker | None = None) -> None:
        super().__init__(settings, broker)
        s = self.settings
        self.metrics_registry = build_registry(self)
        self._generated_token = s.admin_token is None
        self.admin_token = (
            s.admin_token.get_secret_value()
            if s.admin_token is not None
            else secrets.token_urlsafe(24)
        )
        #: Path (relative to the router) -> endpoint; ``serve`` calls these directly.
        self.ws_endpoints: dict[str, WebSocketEndpoint] = {
            "/ws": self._endpoint(None),
            **{f"/ws/{st.value}": self._endpoint(st) for st in SubscriptionType},
        }
        self.router = APIRouter()
        for path, endpoint in self.ws_endpoints.items():
            self.router.add_api_websocket_route(path, endpoint)
        self.router.include_router(build_api_router(self, self.admin_token))

    def _endpoint(self, preset: SubscriptionType | None) -> WebSocketEndpoint:
        return WebSocketEndpoint(
            settings=self.settings,
            hub=self.hub,
            admission=self.admission,
            sessions=self.sessions,
            durable=self.durable,
            requests=self.requests,
            stats=self.stats,
            on_slow_consumer=self.on_slow_consumer,
            on_shutdown=self.close_for_shutdown,
            preset=preset,
            deflate=self.deflate,
        )

    def ws_routes(self, prefix: str = "/realtime") -> dict[str, ASGIApp]:
        """The WebSocket endpoints as bare ASGI apps by full path, for the router
        mounted under ``prefix``: ``serve`` hands them to its WebSocket layer, which
        calls them directly (with the correlation id bound as the middleware does)
        instead of through FastAPI's routing and exception middleware around each
        connection. BodySizeLimit concerns HTTP bodies."""
        return {prefix + path: websocket_app(ep) for path, ep in self.ws_endpoints.items()}

    async def start(self) -> None:
        if self.started:
            return
        await super().start()
        if self._generated_token:
            print(
                "football-realtime: REALTIME_ADMIN_TOKEN is not set; generated admin token "
                f"for this run: {self.admin_token}",
                file=sys.stderr,
                flush=True,
            )

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def websocket_app(endpoint: WebSocketEndpoint) -> ASGIApp:
    """A WebSocket endpoint as a bare ASGI app, with what CorrelationIdMiddleware does
    for it: the request's correlation id bound in the connection's task (which ends
    with the connection, so nothing needs resetting). One coroutine frame per
    connection instead of a middleware frame and a route frame."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        cid = correlation_id_of(scope)
        if cid is not None:
            bind_correlation_id(cid)
        await endpoint(WebSocket(scope, receive, send))

    return app


def create_app(settings: Settings | None = None, *, broker: Broker | None = None) -> FastAPI:
    """Build a fresh FastAPI app that owns a fresh :class:`Realtime` (``app.state.realtime``)."""
    realtime = Realtime(settings, broker)
    app = FastAPI(
        title="football-realtime",
        version=__version__,
        description="Real-time push service for football data and predictions.",
        lifespan=realtime.lifespan,
    )
    app.state.realtime = realtime
    app.include_router(realtime.router, prefix="/realtime")
    app.include_router(metrics_router(realtime.metrics_registry))
    app.add_middleware(CorrelationIdMiddleware)
    app.add_middleware(BodySizeLimit, limit=realtime.settings.max_request_body)
    return app
