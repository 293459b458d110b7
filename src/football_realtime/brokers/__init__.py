"""Brokers carry published events to every instance, in order, with history."""

from ..config import Settings
from ..core.events import EventType
from .base import Broker, BrokerUnavailable, CriticalRetention, PublishedEvent, PublishResult
from .memory import MemoryBroker

__all__ = [
    "REDIS_SCHEMES",
    "Broker",
    "BrokerUnavailable",
    "CriticalRetention",
    "MemoryBroker",
    "PublishResult",
    "PublishedEvent",
    "create_broker",
    "critical_retention",
]

#: URL schemes of the Redis broker (``redis+sentinel``: brokers/sentinel.py,
#: ``redis+cluster``: brokers/redis_cluster.py).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")


def create_broker(
    url: str,
    *,
    history_size: int,
    history_ttl: float,
    min_replicas: int = 0,
    reader: bool = True,
    max_connections: int | None = None,
    critical: CriticalRetention | None = None,
) -> Broker:
    """Build the broker named by ``REALTIME_BROKER_URL``; ``min_replicas`` is
    ``REALTIME_REDIS_MIN_REPLICAS``, ``max_connections`` ``REALTIME_REDIS_MAX_CONNECTIONS``
    (Redis only; None: the broker's default); ``critical``: the events kept beyond the
    history for durable sessions (None: none); ``reader=False``: a Redis broker that
    publishes and reads history but delivers nothing (the standalone publisher)."""
    if url.startswith("memory://") or url == "memory":
        if min_replicas:
            raise ValueError(
                "REALTIME_REDIS_MIN_REPLICAS needs a Redis broker (redis://, "
                f"redis+sentinel:// or redis+cluster://), not {url!r}"
            )
        return MemoryBroker(history_size=history_size, history_ttl=history_ttl, critical=critical)
    if url.startswith(REDIS_SCHEMES):
        from .redis import RedisBroker

        return RedisBroker(
            url,
            history_size=history_size,
            history_ttl=history_ttl,
            reader=reader,
            min_replicas=min_replicas,
            critical=critical,
            **({} if max_connections is None else {"max_connections": max_connections}),
        )
    raise ValueError(
        f"unsupported broker URL scheme in {url!r}; use memory://, redis://, "
        "redis+sentinel:// or redis+cluster://"
    )


def critical_retention(settings: Settings) -> CriticalRetention:
    """The events a broker keeps beyond its history for durable sessions, per the
    settings (``REALTIME_SESSION_CRITICAL_TYPES``, ``_TTL``, ``_CRITICAL_SIZE``)."""
    return CriticalRetention(
        types=frozenset(EventType(t) for t in settings.session_critical_types),
        ttl=settings.session_ttl,
        size=settings.session_critical_size,
    )
