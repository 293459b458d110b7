"""Service counters: one source of truth for /realtime/stats and /metrics."""

from __future__ import annotations

import time
from collections import Counter


class ServiceStats:
    """Plain counters updated on the hot path; readers derive rates and averages."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.connections_opened = 0
        self.connections_closed = 0
        self.closed_by_code: Counter[int] = Counter()
        self.connection_seconds_total = 0.0  # summed over closed connections
        self.messages_received = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        self.events_published = 0
        self.delivered_by_type: Counter[str] = Counter()
        self.published_by_type: Counter[str] = Counter()
        self.errors_by_code: Counter[str] = Counter()
        self.slow_consumer_disconnects = 0
        self.conflated = 0
        self.recoveries = 0
        self.recoveries_failed = 0
        self.replayed_events = 0
        self.snapshot_events = 0

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_mono

    @property
    def errors(self) -> int:
        return sum(self.errors_by_code.values())

    def snapshot(self, active_connections: int, subscriptions: int) -> dict[str, float | int]:
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
            "subscriptions": subscriptions,
            "errors": self.errors,
            "slow_consumer_disconnects": self.slow_consumer_disconnects,
            "conflated_events": self.conflated,
            "recoveries": self.recoveries,
            "recoveries_failed": self.recoveries_failed,
            "replayed_events": self.replayed_events,
            "snapshot_events": self.snapshot_events,
        }
