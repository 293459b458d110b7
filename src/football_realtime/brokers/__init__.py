"""Brokers carry published events to every instance, in order, with history."""

from .base import Broker, BrokerUnavailable, PublishedEvent, PublishResult
from .memory import MemoryBroker

__all__ = ["Broker", "BrokerUnavailable", "MemoryBroker", "PublishResult", "PublishedEvent"]


def create_broker(url: str, *, history_size: int, history_ttl: float) -> Broker:
    """Build the broker named by ``REALTIME_BROKER_URL``."""
    if url.startswith("memory://") or url == "memory":
        return MemoryBroker(history_size=history_size, history_ttl=history_ttl)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisBroker

        return RedisBroker(url, history_size=history_size, history_ttl=history_ttl)
    raise ValueError(f"unsupported broker URL scheme in {url!r}; use memory:// or redis://")
