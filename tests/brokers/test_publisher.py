"""The standalone Publisher: same validation as the service, same broker code, clear errors."""

from __future__ import annotations

import pytest

from football_realtime.brokers import BrokerUnavailable
from football_realtime.brokers.redis import RedisBroker
from football_realtime.core.events import SubscriptionType
from football_realtime.publisher import EventValidationError, Publisher

from ..cluster_support import score
from ..redis_server import RedisServer


async def test_publisher_validates_publishes_and_is_idempotent() -> None:
    with RedisServer() as redis:
        async with Publisher(redis.url) as p:
            with pytest.raises(EventValidationError) as exc:
                await p.publish({"event_type": "match_score_changed", "data": {"match_id": "7"}})
            fields = {e["field"] for e in exc.value.errors}
            assert {"data.match_id", "data.home_score", "data.away_score"} <= fields
            with pytest.raises(EventValidationError, match="sent by the server"):
                await p.publish(
                    {"event_type": "connection_status", "data": {"status": "connected"}}
                )
            a = await p.publish(score(7, 1), idempotency_key="goal-7-1")
            b = await p.publish(score(7, 1), idempotency_key="goal-7-1")
            c = await p.publish(score(7, 2))
        assert (a.stream, a.offset, a.duplicate) == ("matches", 1, False)
        assert (b.offset, b.epoch, b.duplicate) == (1, a.epoch, True)
        assert c.offset == 2
        # What a service instance replays is exactly what was published, offsets included.
        reader = RedisBroker(redis.url, history_size=100, history_ttl=60, reader=False)
        history = await reader.history(SubscriptionType.MATCHES, 0)
        await reader.stop()
        assert history is not None
        assert [(e.offset, e.data["home_score"]) for e in history] == [(1, 1), (2, 2)]
        assert b'"stream":"matches","offset":2' in history[1].payload


async def test_publisher_refuses_memory_and_reports_an_unreachable_redis() -> None:
    with pytest.raises(ValueError, match="shared broker"):
        Publisher("memory://")
    with RedisServer() as redis:
        url = redis.url
    async with Publisher(url) as p:  # that redis-server is gone now
        with pytest.raises(BrokerUnavailable):
            await p.publish(score(1, 0))
