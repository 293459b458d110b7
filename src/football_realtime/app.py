"""The app factory: :class:`Realtime` owns all state; :func:`create_app` wraps it in FastAPI.

Mount the service into an existing FastAPI app::

    realtime = Realtime(Settings())
    app = FastAPI(lifespan=realtime.lifespan)
    app.include_router(realtime.router, prefix="/realtime")

and publish from business code in the same process with ``await realtime.publish(event)``.
Add ``football_realtime.metrics.mount_metrics(app, realtime)`` for ``GET /metrics``.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from . import __version__
from .api import BodySizeLimit, build_api_router
from .brokers import Broker, PublishResult, create_broker
from .brokers.base import BrokerUnavailable, PublishedEvent
from .brokers.redis import RedisBroker
from .cluster import ClusterRegistry
from .config import Settings
from .connection import Connection
from .core.close_codes import CloseCode
from .core.encoding import dumps, server_message
from .core.events import (
    EVENT_STREAM,
    EventType,
    EventValidationError,
    RealtimeEvent,
    SubscriptionType,
    prepare_published_event,
)
from .hub import Hub
from .logs import (
    CURRENT_EVENT,
    CorrelationIdMiddleware,
    bind_correlation_id,
    correlation_id_of,
    reset_correlation_id,
)
from .metrics import build_registry, metrics_router
from .publisher import prepare_envelope
from .security import Guard
from .stats import ServiceStats
from .transport import WebSocketEndpoint

log = logging.getLogger("football_realtime")


class Realtime:
    """The service: settings, hub, broker and counters, plus the routes that expose them."""

    def __init__(self, settings: Settings | None = None, broker: Broker | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        s = self.settings
        self.stats = ServiceStats()
        self.hub = Hub(
            self.stats,
            max_subscriptions=s.max_subscriptions_per_connection,
            max_rooms=s.max_rooms_per_connection,
        )
        self.broker: Broker = (
            broker
            if broker is not None
            else create_broker(s.broker_url, history_size=s.history_size, history_ttl=s.history_ttl)
        )
        self.guard = Guard(s, self.hub, self.stats)
        self.hub.render_view = self.guard.render_view
        # Optional broker ability: brokers that count their own failures (e.g. the
        # consumer loop of a networked broker) take the stats through bind_stats().
        bind_stats = getattr(self.broker, "bind_stats", None)
        if bind_stats is not None:
            bind_stats(self.stats)
        self.metrics_registry = build_registry(self)
        self._generated_token = s.admin_token is None
        self.admin_token = (
            s.admin_token.get_secret_value()
            if s.admin_token is not None
            else secrets.token_urlsafe(24)
        )
        self.cluster = ClusterRegistry(
            self,
            self.broker.redis if isinstance(self.broker, RedisBroker) else None,
            s.cluster_heartbeat_interval,
        )
        self.hub.on_membership = self.cluster.on_membership
        self.router = self._build_router()
        self.started = False

    def _build_router(self) -> APIRouter:
        router = APIRouter()
        #: Path (relative to the router) -> endpoint; ``serve`` calls these directly.
        self.ws_endpoints: dict[str, WebSocketEndpoint] = {"/ws": WebSocketEndpoint(self)}
        for st in SubscriptionType:
            self.ws_endpoints[f"/ws/{st.value}"] = WebSocketEndpoint(self, st)
        for path, endpoint in self.ws_endpoints.items():
            router.add_api_websocket_route(path, endpoint)
        router.include_router(build_api_router(self))
        return router

    def ws_routes(self, prefix: str = "/realtime") -> dict[str, ASGIApp]:
        """The WebSocket endpoints as bare ASGI apps by full path, for the router
        mounted under ``prefix``: ``serve`` hands them to its WebSocket layer, which
        calls them directly (with the correlation id bound as the middleware does)
        instead of through FastAPI's routing and exception middleware around each
        connection. BodySizeLimit concerns HTTP bodies."""
        return {prefix + path: websocket_app(ep) for path, ep in self.ws_endpoints.items()}

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self.started:
            return
        await self.broker.start(self.on_event, self.on_stream_reset)
        await self.cluster.start()
        self.started = True
        if self._generated_token:
            print(
                "football-realtime: REALTIME_ADMIN_TOKEN is not set; generated admin token "
                f"for this run: {self.admin_token}",
                file=sys.stderr,
                flush=True,
            )

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for conn in list(self.hub.connections.values()):
            self.close_for_shutdown(conn)
        await self.cluster.stop()
        await self.broker.stop()

    def close_for_shutdown(self, conn: Connection) -> None:
        """Graceful shutdown of one connection: ``connection_status`` closing, then 1012,
        so the client reconnects at once (another instance answers) and recovers."""
        if conn.closing:
            return
        self.hub.send_payload(
            conn,
            server_message(
                EventType.CONNECTION_STATUS,
                {
                    "status": "closing",
                    "reason": "server shutting down",
                    "instance_id": self.settings.instance_id,
                    "reconnect": True,
                },
            ),
        )
        conn.close(CloseCode.SERVICE_RESTART, "server shutting down")

    def on_stream_reset(self, stream: SubscriptionType, epoch: str | None) -> None:
        """The broker lost continuity on ``stream``: with a new ``epoch`` (history lost),
        connections positioned under another epoch reconnect and are told ``recovered:
        false``; with None (events trimmed before delivery), every subscriber does."""
        log.warning("stream %s lost continuity (epoch %s); subscribers recover", stream, epoch)
        for conn in list(self.hub.connections.values()):
            if not any(stream in sub.streams for sub in conn.subscriptions.values()):
                continue
            known = conn.epochs.get(stream)
            if epoch is not None and known == epoch:
                continue  # subscribed under the new epoch already: nothing missed
            conn.close(
                CloseCode.INSUFFICIENT_STATE,
                f"stream {stream.value} lost continuity; reconnect and recover",
            )

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    # -- events from the broker ---------------------------------------------------

    def on_event(self, ev: PublishedEvent) -> int:
        """The broker's delivery callback: fan one event out on this instance.

        Metrics are taken once per event here, never per recipient.
        """
        st = self.stats
        st.record_consumed(ev.published_at, time.time())
        token = CURRENT_EVENT.set(ev)
        try:
            n = self.hub.deliver(ev)
        finally:
            CURRENT_EVENT.reset(token)
        st.record_fanout(ev.event_type, ev.published_at, len(ev.payload), n)
        return n

    # -- publishing --------------------------------------------------------------

    async def publish(
        self, event: RealtimeEvent | dict[str, Any], *, idempotency_key: str | None = None
    ) -> PublishResult:
        """Validate and publish an event to every matching subscriber (on every instance).

        Raises :class:`EventValidationError` naming the field at fault, or
        ``BrokerUnavailable`` when the broker cannot take it.
        """
        envelope, stream = prepare_envelope(event)
        cid = envelope.get("correlation_id")
        token = bind_correlation_id(cid) if cid else None
        t0 = time.perf_counter()
        try:
            result = await self.broker.publish(envelope, stream, idempotency_key)
        except BrokerUnavailable as exc:
            self.stats.broker_errors["publish"] += 1
            log.warning("publish failed: broker unavailable: %s", exc)
            raise
        finally:
            if token is not None:
                reset_correlation_id(token)
        self.stats.broker_publish_latency.observe(time.perf_counter() - t0)
        if not result.duplicate:
            self.stats.events_published += 1
            self.stats.published_by_type[envelope["event_type"]] += 1
        return result

    def send(
        self,
        event: RealtimeEvent | dict[str, Any],
        *,
        user_id: str | None = None,
        connection_id: str | None = None,
        room: str | None = None,
        everyone: bool = False,
    ) -> int:
        """Send an event to one user's connections, one connection, a room, or every
        connection on this instance, regardless of subscriptions. Returns the number of
        recipients."""
        ev = prepare_published_event(event)
        # Offset 0: a direct send is not part of a stream (the wire form has no offset);
        # it still goes through each recipient's view (tier policy).
        direct = PublishedEvent(
            EVENT_STREAM[ev.event_type], 0, ev.event_type, ev.data, dumps(ev.to_wire())
        )
        hub = self.hub
        if user_id is not None:
            return hub.send_event_many(hub.user_connections.get(user_id, ()), direct)
        if connection_id is not None:
            return hub.send_event_many((connection_id,), direct)
        if room is not None:
            return hub.send_event_many(hub.rooms.get(room, ()), direct)
        if everyone:
            return hub.send_event_many(hub.connections, direct)
        raise EventValidationError(
            "send needs user_id, connection_id, room or everyone=True",
            [{"field": "target", "message": "no target", "type": "value_error"}],
        )

    # -- observation -------------------------------------------------------------

    def stats_snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = self.stats.snapshot(len(self.hub.connections), len(self.hub.index))
        snap["users"] = len(self.hub.user_connections)
        snap["rooms"] = len(self.hub.rooms)
        snap["instance_id"] = self.settings.instance_id
        snap["broker"] = self.broker.name
        # str keys: orjson (the WebSocket get_stats reply) refuses str subclasses like EventType.
        snap["delivered_by_event_type"] = {
            str(k): v for k, v in self.stats.delivered_by_type.items()
        }
        snap["published_by_event_type"] = {
            str(k): v for k, v in self.stats.published_by_type.items()
        }
        snap["errors_by_code"] = dict(self.stats.errors_by_code)
        snap["closed_by_code"] = {str(k): v for k, v in self.stats.closed_by_code.items()}
        snap["received_by_type"] = dict(self.stats.received_by_type)
        snap["broker_errors_by_operation"] = dict(self.stats.broker_errors)
        return snap

    def on_slow_consumer(self, conn: Connection) -> None:
        self.stats.slow_consumer_disconnects += 1
        log.warning(
            "closing slow consumer: outbound buffer over %d bytes",
            self.settings.outbound_buffer_bytes,
            extra={"connection_id": conn.id, "user_id": conn.user_id},
        )


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
    app.include_router(metrics_router(realtime))
    app.add_middleware(CorrelationIdMiddleware)
    app.add_middleware(BodySizeLimit, limit=realtime.settings.max_request_body)
    return app
