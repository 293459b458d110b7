"""The app factory: :class:`Realtime` owns all state; :func:`create_app` wraps it in FastAPI.

Mount the service into an existing FastAPI app::

    realtime = Realtime(Settings())
    app = FastAPI(lifespan=realtime.lifespan)
    app.include_router(realtime.router, prefix="/realtime")

and publish from business code in the same process with ``await realtime.publish(event)``.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from . import __version__
from .api import build_api_router
from .brokers import Broker, PublishResult, create_broker
from .config import Settings
from .connection import Connection
from .core.close_codes import CloseCode
from .core.encoding import dumps
from .core.events import (
    EVENT_STREAM,
    EventValidationError,
    RealtimeEvent,
    SubscriptionType,
    prepare_published_event,
)
from .hub import Hub
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
        self._generated_token = s.admin_token is None
        self.admin_token = (
            s.admin_token.get_secret_value()
            if s.admin_token is not None
            else secrets.token_urlsafe(24)
        )
        self.router = self._build_router()
        self.started = False

    def _build_router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_websocket_route("/ws", WebSocketEndpoint(self))
        for st in SubscriptionType:
            router.add_api_websocket_route(f"/ws/{st.value}", WebSocketEndpoint(self, st))
        router.include_router(build_api_router(self))
        return router

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self.started:
            return
        await self.broker.start(self.hub.deliver)
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
        self.hub.close_all(CloseCode.SERVICE_RESTART, "server shutting down")
        await self.broker.stop()

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    # -- publishing --------------------------------------------------------------

    async def publish(
        self, event: RealtimeEvent | dict[str, Any], *, idempotency_key: str | None = None
    ) -> PublishResult:
        """Validate and publish an event to every matching subscriber (on every instance).

        Raises :class:`EventValidationError` naming the field at fault, or
        ``BrokerUnavailable`` when the broker cannot take it.
        """
        ev = prepare_published_event(event)
        envelope = ev.to_wire()
        envelope.pop("stream", None)
        envelope.pop("offset", None)
        result = await self.broker.publish(envelope, EVENT_STREAM[ev.event_type], idempotency_key)
        if not result.duplicate:
            self.stats.events_published += 1
            self.stats.published_by_type[ev.event_type] += 1
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
        payload = dumps(ev.to_wire())
        if user_id is not None:
            return self.hub.send_to_user(user_id, payload)
        if connection_id is not None:
            return self.hub.send_to_connection(connection_id, payload)
        if room is not None:
            return self.hub.send_to_room(room, payload)
        if everyone:
            return self.hub.send_to_all(payload)
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
        snap["delivered_by_event_type"] = dict(self.stats.delivered_by_type)
        snap["published_by_event_type"] = dict(self.stats.published_by_type)
        snap["errors_by_code"] = dict(self.stats.errors_by_code)
        snap["closed_by_code"] = {str(k): v for k, v in self.stats.closed_by_code.items()}
        return snap

    def on_slow_consumer(self, conn: Connection) -> None:
        self.stats.slow_consumer_disconnects += 1
        log.warning("closing slow consumer connection_id=%s user_id=%s", conn.id, conn.user_id)


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
    return app
