"""The Redis broker's critical events (``{frt:S}:crit``) across an epoch rotation: the
rotation drops them with the history, so publishing under the new epoch (whose offsets
may be lower than the old entries' ids) keeps working and nothing of the old epoch is
replayed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from football_realtime.brokers.base import CriticalRetention
from football_realtime.brokers.redis import RedisBroker
from football_realtime.brokers.redis_layout import crit_key, stream_keys
from football_realtime.core.events import EventType, SubscriptionType

from ..redis_server import RedisServer
from .test_broker_conformance import Node, score, until

M = SubscriptionType.MATCHES
GOALS = CriticalRetention(types=frozenset({EventType.MATCH_SCORE_CHANGED}), ttl=600.0, size=100)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


async def test_an_epoch_rotation_drops_the_critical_events(redis_server: RedisServer) -> None:
    redis_server.flushall()
    broker = RedisBroker(redis_server.url, history_size=100, history_ttl=600.0, critical=GOALS)
    node = await Node(broker).start()
    try:
        first = [await broker.publish(score(1, i), M, None) for i in range(3)]
        await node.wait_delivered(M, 3)
        assert [e.offset for e in await broker.critical_history(M, 0)] == [1, 2, 3]
        assert redis_server.command("EXISTS", crit_key(M)) == b":1\r\n"
        # The counter goes back (Redis restored from an older snapshot, or a failover to
        # a replica that lacked the newest writes): the reader rotates the epoch.
        redis_server.command("HSET", stream_keys(M)[0], "offset", "1")
        await until(lambda: M in node.resets)
        again = await broker.publish(score(1, 9), M, None)
        assert again.epoch != first[0].epoch and again.offset == 2
        await until(lambda: node.offsets(M)[-1:] == [2] and len(node.got) == 4)
        got = await broker.critical_history(M, 0)
        assert [(e.offset, e.data["home_score"]) for e in got] == [(2, 9)]
    finally:
        await broker.stop()


async def test_leftover_critical_entries_never_fail_a_publish(redis_server: RedisServer) -> None:
    """Critical entries above the counter without the rotation dropping them (say, an
    operator's manual repair): the publish drops them and succeeds."""
    redis_server.flushall()
    broker = RedisBroker(redis_server.url, history_size=100, history_ttl=600.0, critical=GOALS)
    node = await Node(broker).start()
    try:
        for i in range(3):
            await broker.publish(score(1, i), M, None)
        await node.wait_delivered(M, 3)
        meta, log_key, _ = stream_keys(M)
        redis_server.command("HSET", meta, "epoch", "rotated-elsewhere", "offset", "1")
        redis_server.command("DEL", log_key)
        assert (await broker.position(M))[0] == "rotated-elsewhere"
        res = await broker.publish(score(1, 9), M, None)
        assert (res.epoch, res.offset) == ("rotated-elsewhere", 2)
        await until(lambda: node.got[-1].data["home_score"] == 9)
        got = await broker.critical_history(M, 0)
        assert [(e.offset, e.data["home_score"]) for e in got] == [(2, 9)]
    finally:
        await broker.stop()
