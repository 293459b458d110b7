"""Service counters: one source of truth for /realtime/stats and /metrics.

Everything here is a plain int, float or dict updated on the event loop with no
locks. The hot path (one delivery to one connection) touches only integer
counters; histograms are observed once per event (fan-out latency, size), once
per client message and once per closed connection, never once per delivery.
``/metrics`` (``metrics.py``) and ``/realtime/stats`` both read these objects at
request time, so the two can never disagree.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

#: Seconds, for publish-to-write and broker latencies.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Seconds from publish to a client's acknowledgement (clients coalesce acks: 250 ms).
ACK_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
#: Bytes, for message sizes.
SIZE_BUCKETS: tuple[float, ...] = (
    64,
    128,
    256,
    512,
    1024,
    2048,
    4096,
    8192,
    16384,
    65536,
    262144,
    1048576,
)
#: Seconds a connection stayed open.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 1800, 3600, 14400, 86400)
#: Bytes waiting in one connection's outbound buffer (sampled at scrape time).
QUEUE_BUCKETS: tuple[float, ...] = (0, 4096, 16384, 65536, 262144, 524288, 1048576, 4194304)


class Histogram:
    """Cumulative-bucket histogram with Prometheus semantics (``le`` is inclusive).

    ``quantile`` interpolates inside a bucket exactly as PromQL's
    ``histogram_quantile`` does, so ``/realtime/stats`` percentiles and a Grafana
    panel over ``/metrics`` compute the same figure from the same counts.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` per bucket, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        total = 0
        for le, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((le, total))
        return out

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) as ``histogram_quantile`` computes it; None if empty."""
        if self.count == 0:
            return None
        rank = q * self.count
        lower = 0.0
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if i == len(self.bounds):  # +Inf bucket: the highest finite bound
                    return self.bounds[-1] if self.bounds else None
                upper = self.bounds[i]
                return lower + (upper - lower) * ((rank - seen) / n)
            seen += n
            if i < len(self.bounds):
                lower = self.bounds[i]
        return self.bounds[-1] if self.bounds else None

    @classmethod
    def merged(cls, bounds: Sequence[float], parts: Iterable[Histogram]) -> Histogram:
        h = cls(bounds)
        for p in parts:
            for i, n in enumerate(p.counts):
                h.counts[i] += n
            h.sum += p.sum
            h.count += p.count
        return h

    def summary(self, scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
        """count, mean and p50/p90/p95/p99, multiplied by ``scale`` (e.g. 1000 for ms)."""
        out: dict[str, Any] = {"count": self.count}
        out["mean"] = round(self.sum / self.count * scale, digits) if self.count else None
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
            v = self.quantile(q)
            out[name] = None if v is None else round(v * scale, digits)
        return out


class ServiceStats:
    """Plain counters updated on the hot path; readers derive rates and averages."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.connections_opened = 0
        self.connections_closed = 0
        self.closed_by_code: Counter[int] = Counter()
        self.connection_duration = Histogram(DURATION_BUCKETS)
        self.messages_received = 0
        #: client messages by their ``type`` (only ones that parsed)
        self.received_by_type: Counter[str] = Counter()
        self.bytes_received = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        self.events_published = 0
        self.delivered_by_type: Counter[str] = Counter()
        self.published_by_type: Counter[str] = Counter()
        self.errors_by_code: Counter[str] = Counter()
        self.slow_consumer_disconnects = 0
        self.conflated = 0
        #: publish-to-write latency (seconds) per event type, observed once per fan-out
        self.delivery_latency: dict[str, Histogram] = {}
        self.size_in = Histogram(SIZE_BUCKETS)  # client messages
        self.size_out = Histogram(SIZE_BUCKETS)  # published events, once per fan-out
        self.broker_publish_latency = Histogram(LATENCY_BUCKETS)
        self.broker_consume_latency = Histogram(LATENCY_BUCKETS)
        #: broker failures by operation (publish, consume, history, ...)
        self.broker_errors: Counter[str] = Counter()
        #: events fanned out by this instance (received from the broker)
        self.events_consumed = 0
        # Recovery (``since`` on subscribe): incremented by the recovery code.
        self.replayed_events = 0
        self.recoveries = 0
        self.recoveries_failed = 0
        self.snapshot_events = 0  # latest-state events sent on subscribe with snapshot
        # Durable sessions (service/durable_sessions.py).
        self.sessions_created = 0
        self.sessions_resumed = 0
        #: resumes that found no session (expired, or never existed): a fresh one opened
        self.sessions_expired = 0
        #: refusals by reason (owner, token, limit, invalid, unavailable)
        self.sessions_refused: Counter[str] = Counter()
        #: publish-to-ack latency (seconds) per event type: per valid ack, the newest
        #: event it acknowledges on each stream
        self.ack_latency: dict[str, Histogram] = {}

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_mono

    @property
    def errors(self) -> int:
        return sum(self.errors_by_code.values())

    @property
    def connection_seconds_total(self) -> float:
        """Seconds summed over closed connections (the duration histogram's sum)."""
        return self.connection_duration.sum

    # -- recorders (called once per connection, client message or event) ---------

    def record_close(self, code: int, duration: float) -> None:
        self.connections_closed += 1
        self.closed_by_code[code] += 1
        self.connection_duration.observe(duration)

    def record_received(self, size: int) -> None:
        self.messages_received += 1
        self.bytes_received += size
        self.size_in.observe(size)

    def record_consumed(self, published_at: float, now: float) -> None:
        """An event arrived from the broker (before fan-out)."""
        self.events_consumed += 1
        if published_at > 0:
            self.broker_consume_latency.observe(max(now - published_at, 0.0))

    def record_fanout(self, event_type: str, published_at: float, size: int, n: int) -> None:
        """One event was written to ``n`` connections (counters updated by the hub)."""
        self.size_out.observe(size)
        if n and published_at > 0:
            h = self.delivery_latency.get(event_type)
            if h is None:
                h = self.delivery_latency[event_type] = Histogram(LATENCY_BUCKETS)
            h.observe(max(time.time() - published_at, 0.0))

    def record_ack_latency(self, event_type: str, seconds: float) -> None:
        h = self.ack_latency.get(event_type)
        if h is None:
            h = self.ack_latency[event_type] = Histogram(ACK_LATENCY_BUCKETS)
        h.observe(max(seconds, 0.0))

    # -- readers ---------------------------------------------------------------------

    def latency_overall(self) -> Histogram:
        return Histogram.merged(LATENCY_BUCKETS, self.delivery_latency.values())

    def snapshot(self, active_connections: int, subscriptions: int) -> dict[str, Any]:
        up = max(self.uptime, 1e-9)
        rate_base = max(up, 1.0)
        total_messages = self.messages_sent + self.messages_received
        closed = self.connections_closed
        return {
            "active_connections": active_connections,
            "total_messages": total_messages,
            "error_rate": self.errors / max(total_messages, 1),
            "uptime_seconds": round(up, 3),
            "messages_per_second": round(total_messages / rate_base, 3),
            "connects_per_second": round(self.connections_opened / rate_base, 3),
            "disconnects_per_second": round(closed / rate_base, 3),
            "connections_opened": self.connections_opened,
            "connections_closed": closed,
            "average_connection_duration_seconds": round(self.connection_seconds_total / closed, 3)
            if closed
            else 0.0,
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "average_message_size": round(
                (self.bytes_sent + self.bytes_received) / total_messages, 1
            )
            if total_messages
            else 0.0,
            "events_published": self.events_published,
            "events_consumed": self.events_consumed,
            "subscriptions": subscriptions,
            "errors": self.errors,
            "slow_consumer_disconnects": self.slow_consumer_disconnects,
            "conflated_events": self.conflated,
            "replayed_events": self.replayed_events,
            "recoveries": self.recoveries,
            "recoveries_failed": self.recoveries_failed,
            "snapshot_events": self.snapshot_events,
            "sessions_created": self.sessions_created,
            "sessions_resumed": self.sessions_resumed,
            "sessions_expired": self.sessions_expired,
            "sessions_refused": sum(self.sessions_refused.values()),
            "sessions_refused_by_reason": dict(self.sessions_refused),
            "ack_latency_ms": Histogram.merged(
                ACK_LATENCY_BUCKETS, self.ack_latency.values()
            ).summary(1000.0),
            "ack_latency_ms_by_event_type": {
                str(et): h.summary(1000.0) for et, h in sorted(self.ack_latency.items())
            },
            "broker_errors": sum(self.broker_errors.values()),
            # Percentiles interpolated from the same buckets /metrics exports.
            "latency_ms": self.latency_overall().summary(1000.0),
            # str(): orjson (the WebSocket get_stats reply) refuses EventType keys.
            "latency_ms_by_event_type": {
                str(et): h.summary(1000.0) for et, h in sorted(self.delivery_latency.items())
            },
            "broker_publish_latency_ms": self.broker_publish_latency.summary(1000.0),
            "broker_consume_latency_ms": self.broker_consume_latency.summary(1000.0),
            "message_size_bytes": {
                "in": self.size_in.summary(1.0, 1),
                "out": self.size_out.summary(1.0, 1),
            },
        }
