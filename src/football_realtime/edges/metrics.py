"""Prometheus metrics, read from :class:`ServiceStats` and the hub at scrape time.

Nothing here runs on the fan-out path: the collector turns the plain counters and
histograms of ``stats.py`` into metric families when ``GET /metrics`` is scraped,
and samples per-connection queue depth from the connections it finds then. Each
app owns its own :class:`CollectorRegistry` (no global registry), holding this
collector plus the standard process, platform and GC collectors.

Label values are bounded: event types, client message types and error codes come
from closed sets in ``core``; close codes outside the documented table become
``other``; no label ever names a connection, user, match or room.

Mount in a host app::

    app.include_router(metrics_router(build_registry(realtime)))   # GET /metrics
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .._version import __version__
from ..core.close_codes import CloseCode
from ..stats import QUEUE_BUCKETS, Histogram

if TYPE_CHECKING:
    from ..service.realtime import RealtimeService

PREFIX = "realtime_"
#: Distinct values one label may take before the rest is folded into ``other``.
LABEL_CAP = 64
_KNOWN_CLOSE_CODES = frozenset({int(c) for c in CloseCode} | set(range(1000, 1016)))
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(frozen=True)
class MetricSpec:
    name: str  # without the ``realtime_`` prefix and without ``_total``
    kind: str  # counter, gauge, histogram, gaugehistogram
    labels: tuple[str, ...]
    help: str

    @property
    def exposed(self) -> str:
        """The name as it appears in the text exposition (counters gain ``_total``)."""
        return PREFIX + self.name + ("_total" if self.kind == "counter" else "")


#: Every metric this service exports (docs/operations.md lists them; a test checks both).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "instance_info",
        "gauge",
        ("instance_id", "version", "broker"),
        "Always 1; the labels name the instance, its version and its broker.",
    ),
    MetricSpec("connections_active", "gauge", (), "Open WebSocket connections."),
    MetricSpec("users_active", "gauge", (), "Distinct users with at least one connection."),
    MetricSpec("subscriptions_active", "gauge", (), "Subscriptions held by open connections."),
    MetricSpec("rooms_active", "gauge", (), "Rooms with at least one member."),
    MetricSpec("connections_opened", "counter", (), "Connections accepted."),
    MetricSpec(
        "connections_closed",
        "counter",
        ("code",),
        "Connections closed, by WebSocket close code (codes outside the table: other).",
    ),
    MetricSpec(
        "connection_duration_seconds", "histogram", (), "How long closed connections stayed open."
    ),
    MetricSpec(
        "messages_received",
        "counter",
        ("type",),
        "Client messages by message type; type=invalid for ones that did not parse.",
    ),
    MetricSpec(
        "messages_delivered",
        "counter",
        ("event_type",),
        "Published events written to connections (one per connection per event).",
    ),
    MetricSpec(
        "messages_sent", "counter", (), "Every message sent to clients (events, replies, status)."
    ),
    MetricSpec(
        "events_published", "counter", ("event_type",), "Events published through this instance."
    ),
    MetricSpec("events_consumed", "counter", (), "Events this instance received from the broker."),
    MetricSpec(
        "delivery_latency_seconds",
        "histogram",
        ("event_type",),
        "Publish-to-write latency: end of this instance's fan-out minus the event's publish "
        "time (wall clock of the publishing instance).",
    ),
    MetricSpec(
        "message_size_bytes",
        "histogram",
        ("direction",),
        "Message size: direction=in per client message, direction=out per published event "
        "(once per event, not per recipient).",
    ),
    MetricSpec("errors", "counter", ("code",), "Errors answered to clients, by error code."),
    MetricSpec("received_bytes", "counter", (), "Bytes of client messages received."),
    MetricSpec("sent_bytes", "counter", (), "Bytes of messages sent to clients."),
    MetricSpec(
        "outbound_queue_bytes",
        "gaugehistogram",
        (),
        "Connections by bytes waiting in their outbound buffer, sampled at scrape time.",
    ),
    MetricSpec(
        "outbound_queue_bytes_max", "gauge", (), "Largest outbound buffer of any connection."
    ),
    MetricSpec(
        "outbound_queue_limit_bytes",
        "gauge",
        (),
        "Outbound buffer limit; a connection past it is closed as a slow consumer.",
    ),
    MetricSpec(
        "slow_consumer_disconnects",
        "counter",
        (),
        "Connections closed because their outbound buffer overflowed (close 4001).",
    ),
    MetricSpec(
        "conflated_events",
        "counter",
        (),
        "Queued events replaced by a newer one with the same key (latest wins).",
    ),
    MetricSpec(
        "broker_publish_latency_seconds",
        "histogram",
        (),
        "Time for the broker to accept a publish (memory broker: includes local fan-out).",
    ),
    MetricSpec(
        "broker_consume_latency_seconds",
        "histogram",
        (),
        "Event publish time to its arrival at this instance from the broker.",
    ),
    MetricSpec(
        "broker_errors", "counter", ("operation",), "Broker failures by operation (publish, ...)."
    ),
    MetricSpec(
        "recovery_replayed_events",
        "counter",
        (),
        "Events replayed to clients recovering with `since`.",
    ),
    MetricSpec("recoveries", "counter", (), "Recoveries attempted (subscribe with `since`)."),
    MetricSpec(
        "snapshot_events",
        "counter",
        (),
        "Latest-state events sent to clients subscribing with `snapshot`.",
    ),
    MetricSpec(
        "recoveries_failed",
        "counter",
        (),
        "Recoveries answered recovered=false (history gone or epoch changed).",
    ),
    MetricSpec(
        "ack_latency_seconds",
        "histogram",
        ("event_type",),
        "Publish to the client's `ack`: per valid ack that moves a stream forward, the "
        "newest event it acknowledges (wall clock of the publishing instance).",
    ),
    MetricSpec(
        "sessions_active", "gauge", (), "Connections on this instance with a durable session."
    ),
    MetricSpec("sessions_created", "counter", (), "Durable sessions opened new."),
    MetricSpec("sessions_resumed", "counter", (), "Durable sessions resumed."),
    MetricSpec(
        "sessions_expired",
        "counter",
        (),
        "Resumes that found no session (expired, or never created): a new one was opened.",
    ),
    MetricSpec(
        "sessions_refused",
        "counter",
        ("reason",),
        "Sessions refused: reason=owner (another identity), token (no token for a user's "
        "session), limit (sessions per user), unavailable (broker down).",
    ),
    MetricSpec(
        "session_unacked_offsets",
        "gauge",
        (),
        "Over open sessions and their streams: newest offset delivered here minus the "
        "acknowledged offset (an upper bound on events sent and not yet acknowledged).",
    ),
    MetricSpec(
        "tier_delayed_events",
        "gauge",
        (),
        "Events waiting in the delay lines of tiers with timeliness rules (one per event "
        "and tier view, not per connection).",
    ),
    MetricSpec(
        "tier_thinned_events",
        "counter",
        (),
        "Events a thinned tier view dropped because a newer one of their key replaced "
        "them within min_interval_seconds.",
    ),
    MetricSpec(
        "compressed_messages",
        "counter",
        (),
        "Messages compressed for permessage-deflate connections (once per message and "
        "tier view, whatever the number of recipients).",
    ),
    MetricSpec(
        "compression_saved_bytes",
        "counter",
        (),
        "Bytes compression saved, per compressed message (multiply by its recipients "
        "for the wire).",
    ),
)

_SPECS = {m.name: m for m in METRICS}


def close_code_label(code: int) -> str:
    return str(code) if code in _KNOWN_CLOSE_CODES else "other"


def bounded(counts: Mapping[str, int], cap: int = LABEL_CAP) -> dict[str, int]:
    """Label values as given, except odd-looking ones and those past ``cap``: ``other``."""
    out: dict[str, int] = {}
    kept = 0
    for key in sorted(counts):
        if _LABEL_RE.match(key) and kept < cap - 1:
            label = key
            kept += 1
        else:
            label = "other"
        out[label] = out.get(label, 0) + counts[key]
    return out


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    # Same ``le`` spelling as prometheus-client's own histograms (1.048576e+06).
    return [(floatToGoString(le), n) for le, n in h.cumulative()]  # type: ignore[no-untyped-call]


class RealtimeCollector(Collector):
    """Builds the ``realtime_*`` families from one service at scrape time."""

    def __init__(self, realtime: RealtimeService) -> None:
        self.rt = realtime

    def describe(self) -> Iterator[Metric]:
        for spec in METRICS:
            yield self._family(spec)

    @staticmethod
    def _family(spec: MetricSpec) -> Metric:
        name = PREFIX + spec.name
        labels: Sequence[str] = spec.labels
        if spec.kind == "counter":
            return CounterMetricFamily(name, spec.help, labels=labels)
        if spec.kind == "gauge":
            return GaugeMetricFamily(name, spec.help, labels=labels)
        if spec.kind == "histogram":
            return HistogramMetricFamily(name, spec.help, labels=labels)
        return GaugeHistogramMetricFamily(name, spec.help, labels=labels)

    def collect(self) -> Iterator[Metric]:
        rt = self.rt
        st = rt.stats
        hub = rt.hub
        fams: dict[str, Metric] = {spec.name: self._family(spec) for spec in METRICS}

        def value(name: str, v: float, labels: Sequence[str] = ()) -> None:
            fam = fams[name]
            assert isinstance(fam, CounterMetricFamily | GaugeMetricFamily)
            fam.add_metric(list(labels), v)

        def hist(name: str, h: Histogram, labels: Sequence[str] = ()) -> None:
            fam = fams[name]
            assert isinstance(fam, HistogramMetricFamily)
            fam.add_metric(list(labels), _buckets(h), h.sum)

        value("instance_info", 1, (rt.settings.instance_id, __version__, rt.broker.name))
        value("connections_active", len(hub.connections))
        value("users_active", len(hub.user_connections))
        value("subscriptions_active", len(hub.index))
        value("rooms_active", len(hub.rooms))
        value("connections_opened", st.connections_opened)
        closed: dict[str, int] = {}
        for code, n in st.closed_by_code.items():
            label = close_code_label(code)
            closed[label] = closed.get(label, 0) + n
        for label, n in sorted(closed.items()):
            value("connections_closed", n, (label,))
        hist("connection_duration_seconds", st.connection_duration)

        by_type = bounded(st.received_by_type)
        invalid = st.messages_received - sum(st.received_by_type.values())
        if invalid > 0:
            by_type["invalid"] = by_type.get("invalid", 0) + invalid
        for t, n in sorted(by_type.items()):
            value("messages_received", n, (t,))
        for t, n in bounded(st.delivered_by_type).items():
            value("messages_delivered", n, (t,))
        value("messages_sent", st.messages_sent)
        for t, n in bounded(st.published_by_type).items():
            value("events_published", n, (t,))
        value("events_consumed", st.events_consumed)
        for t in sorted(st.delivery_latency)[:LABEL_CAP]:
            hist("delivery_latency_seconds", st.delivery_latency[t], (t,))
        hist("message_size_bytes", st.size_in, ("in",))
        hist("message_size_bytes", st.size_out, ("out",))
        for err, n in bounded(st.errors_by_code).items():
            value("errors", n, (err,))
        value("received_bytes", st.bytes_received)
        value("sent_bytes", st.bytes_sent)

        queue = Histogram(QUEUE_BUCKETS)
        # Most buffers are empty: count those in bulk, observe only the rest.
        queued = [size for size in [c.out.size for c in hub.connections.values()] if size]
        assert QUEUE_BUCKETS[0] == 0
        queue.counts[0] = len(hub.connections) - len(queued)  # the le=0 bucket
        queue.count = queue.counts[0]
        for size in queued:
            queue.observe(size)
        biggest = max(queued, default=0)
        qfam = fams["outbound_queue_bytes"]
        assert isinstance(qfam, GaugeHistogramMetricFamily)
        qfam.add_metric([], _buckets(queue), queue.sum)
        value("outbound_queue_bytes_max", biggest)
        value("outbound_queue_limit_bytes", rt.settings.outbound_buffer_bytes)
        value("slow_consumer_disconnects", st.slow_consumer_disconnects)
        value("conflated_events", st.conflated)

        hist("broker_publish_latency_seconds", st.broker_publish_latency)
        hist("broker_consume_latency_seconds", st.broker_consume_latency)
        for op, n in bounded(st.broker_errors).items():
            value("broker_errors", n, (op,))
        value("recovery_replayed_events", st.replayed_events)
        value("recoveries", st.recoveries)
        value("recoveries_failed", st.recoveries_failed)
        value("snapshot_events", st.snapshot_events)
        for t in sorted(st.ack_latency)[:LABEL_CAP]:
            hist("ack_latency_seconds", st.ack_latency[t], (t,))
        value("sessions_active", len(rt.durable.open_connections))
        value("sessions_created", st.sessions_created)
        value("sessions_resumed", st.sessions_resumed)
        value("sessions_expired", st.sessions_expired)
        for why, n in sorted(st.sessions_refused.items()):
            value("sessions_refused", n, (why,))
        value("session_unacked_offsets", rt.durable.unacked_offsets())
        timing = hub.timing
        value("tier_delayed_events", timing.held() if timing is not None else 0)
        value("tier_thinned_events", timing.thinned() if timing is not None else 0)
        deflate = rt.deflate
        value("compressed_messages", deflate.compressed if deflate is not None else 0)
        value("compression_saved_bytes", deflate.saved if deflate is not None else 0)
        yield from fams.values()


def build_registry(realtime: RealtimeService) -> CollectorRegistry:
    """A registry of this app's own: the service's metrics plus process, platform, GC."""
    registry = CollectorRegistry()
    registry.register(RealtimeCollector(realtime))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


#: The exposition is text: Prometheus' format, or OpenMetrics when ``Accept`` asks for it.
_METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The Prometheus text exposition (OpenMetrics by Accept).",
        "content": {
            CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}},
            OPENMETRICS_CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}},
        },
    },
    413: {
        "description": "The request body is larger than REALTIME_MAX_REQUEST_BODY (64 KiB).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    },
}


def metrics_router(registry: CollectorRegistry, path: str = "/metrics") -> APIRouter:
    """``GET <path>``: the Prometheus (or OpenMetrics, by ``Accept``) exposition of
    ``registry`` (see :func:`build_registry`)."""
    router = APIRouter()

    # async: the collector must read the counters on the event loop that writes them.
    @router.get(
        path,
        summary="Prometheus metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses=_METRICS_RESPONSES,
    )
    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"Content-Type": content_type})

    return router


def mount_metrics(app: FastAPI, realtime: RealtimeService, path: str = "/metrics") -> None:
    """Serve ``realtime``'s metrics at ``path`` of a host app."""
    app.include_router(metrics_router(build_registry(realtime), path))
