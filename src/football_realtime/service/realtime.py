"""The service without a web framework: every component, built once and wired here.

:class:`RealtimeService` owns the hub, the broker, admission and sessions, recovery,
the cluster registry and the counters, and does what the service does whatever
serves it: publish, fan broker events out, send to targets, report its figures,
start and stop. The app factory (``app.py``) puts HTTP and WebSocket edges on top.

Construction order follows the dependencies, and each component receives the ones
it uses (nothing is assigned after construction)::

    stats, broker ─┐
    tier views ────┼─> hub ─> control ─> admission ─> sessions ─> recovery ─> durable sessions ─> requests
    registry ──────┘
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..auth import TokenVerifier
from ..brokers import Broker, PublishResult, create_broker, critical_retention
from ..brokers.base import BrokerUnavailable, PublishedEvent, SharesRedis, StoresSessions
from ..config import Settings
from ..core.close_codes import CloseCode
from ..core.encoding import dumps, server_message
from ..core.events import (
    EVENT_STREAM,
    EventType,
    EventValidationError,
    RealtimeEvent,
    SubscriptionType,
    prepare_envelope,
    prepare_published_event,
)
from ..core.permissions import TierPolicy
from ..logs import CURRENT_EVENT, bind_correlation_id, reset_correlation_id
from ..stats import ServiceStats
from .admission import Admission
from .cluster import ClusterRegistry
from .connection import Connection, SharedDeflate
from .control import ClusterControl
from .control_store import ControlStore, MemoryControlStore, RedisControlStore
from .durable_sessions import DurableSessions
from .hub import Hub
from .recovery import Recovery
from .requests import RequestHandler
from .sessions import Sessions
from .timed_views import TimedViews
from .views import TierViews

log = logging.getLogger("football_realtime")


class RealtimeService:
    """The service: settings, hub, broker and counters, and what they do together."""

    def __init__(self, settings: Settings | None = None, broker: Broker | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        s = self.settings
        self.stats = ServiceStats()
        self.broker: Broker = (
            broker
            if broker is not None
            else create_broker(
                s.broker_url,
                history_size=s.history_size,
                history_ttl=s.history_ttl,
                min_replicas=s.redis_min_replicas,
                max_connections=s.redis_max_connections,
                critical=critical_retention(s),
            )
        )
        policy = TierPolicy.from_config(s.tiers, s.default_tier)
        connections: dict[str, Connection] = {}
        self.cluster = ClusterRegistry(
            s.instance_id,
            connections,
            self.broker,
            self.broker.redis if isinstance(self.broker, SharesRedis) else None,
            s.cluster_heartbeat_interval,
        )
        self.views = TierViews(policy)
        #: Compressed frames for connections that negotiated permessage-deflate
        #: (REALTIME_COMPRESSION=shared), built once per message.
        self.deflate: SharedDeflate | None = (
            SharedDeflate(s.compression_min_bytes) if s.compression == "shared" else None
        )
        #: Tiers that get some streams late or thinned (None: no tier does; the
        #: fan-out then has no timeliness step at all).
        self.timing: TimedViews | None = (
            TimedViews(policy) if any(t.timeliness.timed for t in policy.tiers.values()) else None
        )
        self.hub = Hub(
            self.stats,
            max_subscriptions=s.max_subscriptions_per_connection,
            max_rooms=s.max_rooms_per_connection,
            render_view=self.views.render,
            on_membership=self.cluster.on_membership,
            connections=connections,
            timing=self.timing,
        )
        store: ControlStore = (
            RedisControlStore(
                self.broker.redis, self.hub.user_connections, s.cluster_heartbeat_interval
            )
            if isinstance(self.broker, SharesRedis)
            else MemoryControlStore()
        )
        self.control = ClusterControl(s.instance_id, self.hub, store, self.stats)
        self.verifier = TokenVerifier(s)
        self.admission = Admission(
            s,
            self.stats,
            self.verifier,
            policy,
            self.hub.user_connections,
            banned=self.control.banned,
        )
        self.sessions = Sessions(s, self.hub, self.stats, self.admission, self.control)
        self.recovery = Recovery(self.broker, self.hub, self.sessions, self.stats)
        if not isinstance(self.broker, StoresSessions):
            raise TypeError(f"the {self.broker.name} broker cannot store durable sessions")
        self.durable = DurableSessions(s, self.broker, self.hub, self.recovery, self.stats)
        self.requests = RequestHandler(
            self.hub, self.sessions, self.recovery, self.durable, self.stats, self.stats_snapshot
        )
        self.started = False

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self.started:
            return
        await self.broker.start(self.on_event, self.on_stream_reset)
        await self.cluster.start(self.stats_snapshot)
        await self.control.start()
        await self.durable.start()
        self.started = True

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for conn in list(self.hub.connections.values()):
            self.close_for_shutdown(conn)
        await self.durable.stop()
        await self.control.stop()
        await self.cluster.stop()
        await self.broker.stop()
        if self.timing is not None:
            self.timing.close()

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

    # -- events from the broker ---------------------------------------------------

    def on_event(self, ev: PublishedEvent) -> int:
        """The broker's delivery callback: fan one event out on this instance.

        Metrics are taken once per event here, never per recipient.
        """
        st = self.stats
        st.record_consumed(ev.published_at, time.time())
        self.durable.acks.record(ev)
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
        deflate = self.deflate
        snap["compression"] = {
            "mode": self.settings.compression,
            "min_bytes": self.settings.compression_min_bytes,
            # Per message (once per event and view), not per delivery.
            "messages_compressed": deflate.compressed if deflate is not None else 0,
            "bytes_saved_per_copy": deflate.saved if deflate is not None else 0,
        }
        timing = self.timing
        snap["tier_timeliness"] = {
            "delayed_events": timing.held() if timing is not None else 0,
            "thinned_events": timing.thinned() if timing is not None else 0,
        }
        snap["sessions_active"] = len(self.durable.open_connections)
        snap["session_unacked_offsets"] = self.durable.unacked_offsets()
        return snap

    def on_slow_consumer(self, conn: Connection) -> None:
        self.stats.slow_consumer_disconnects += 1
        log.warning(
            "closing slow consumer: outbound buffer over %d bytes",
            self.settings.outbound_buffer_bytes,
            extra={"connection_id": conn.id, "user_id": conn.user_id},
        )


__all__ = ["RealtimeService"]
