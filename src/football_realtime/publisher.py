"""Publish events from a business service that runs elsewhere and has no web server.

::

    from football_realtime.publisher import Publisher

    async with Publisher("redis://redis:6379/0") as p:
        result = await p.publish(
            {"event_type": "match_score_changed",
             "data": {"match_id": 456, "home_score": 1, "away_score": 0, "minute": 25}},
            idempotency_key="score-456-25",  # optional: a retry publishes nothing new
        )
        print(result.stream, result.offset)

Events are validated exactly as ``Realtime.publish`` and ``POST /realtime/broadcast``
validate them (:class:`EventValidationError` names the field at fault) and written
through the same broker code, so every instance of the service delivers them to
its subscribers in the stream's order. :class:`BrokerUnavailable` is raised when
Redis cannot take the event; nothing is dropped silently. History limits and the
replica acknowledgements a publish needs come from the same ``REALTIME_HISTORY_SIZE`` /
``REALTIME_HISTORY_TTL`` / ``REALTIME_REDIS_MIN_REPLICAS`` settings as the service
(give both the same environment). The URL may name a Sentinel set
(``redis+sentinel://host:26379,host2:26379/mymaster/0``): the publisher then follows a
failover by itself (publishes raise :class:`BrokerUnavailable` until the sentinels
name the new master; retry them with the same idempotency key), or a Redis Cluster
(``redis+cluster://node1:6379,node2:6379``: each publish goes to its stream's shard; a
shard's failover is followed the same way).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .brokers import REDIS_SCHEMES, create_broker, critical_retention
from .brokers.base import BrokerUnavailable, PublishResult
from .config import Settings
from .core.events import (
    EventValidationError,
    RealtimeEvent,
    prepare_envelope,
)

__all__ = ["BrokerUnavailable", "EventValidationError", "Publisher", "prepare_envelope"]


class Publisher:
    """An async context manager holding one connection pool to the broker."""

    def __init__(
        self,
        url: str | None = None,
        *,
        history_size: int | None = None,
        history_ttl: float | None = None,
        min_replicas: int | None = None,
    ) -> None:
        settings = Settings()
        url = url if url is not None else settings.broker_url
        if not url.startswith(REDIS_SCHEMES):
            raise ValueError(
                f"the publisher needs a shared broker (redis://host:port/db, "
                f"redis+sentinel://host:port/master or redis+cluster://host:port), not {url!r}: "
                "a memory:// broker lives inside one service process"
            )
        self.broker = create_broker(
            url,
            history_size=history_size if history_size is not None else settings.history_size,
            history_ttl=history_ttl if history_ttl is not None else settings.history_ttl,
            min_replicas=min_replicas if min_replicas is not None else settings.redis_min_replicas,
            reader=False,
            max_connections=settings.redis_max_connections,
            # The service's critical types (REALTIME_SESSION_CRITICAL_TYPES) are kept for
            # durable sessions whoever publishes them.
            critical=critical_retention(settings),
        )

    async def publish(
        self, event: RealtimeEvent | dict[str, Any], *, idempotency_key: str | None = None
    ) -> PublishResult:
        """Validate and publish one event; returns its stream, offset and epoch."""
        envelope, stream = prepare_envelope(event)
        return await self.broker.publish(envelope, stream, idempotency_key)

    async def close(self) -> None:
        await self.broker.stop()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
