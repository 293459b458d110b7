"""One conformance suite for every broker: memory, redis on a real redis-server,
redis through a real Sentinel set (1 master, 2 replicas, 3 sentinels), and redis on a
real Redis Cluster (3 masters with a replica each).

What brokers/base.py promises: gapless offsets per stream from 1, delivery in offset
order exactly once, bounded history (size and age) read back by offset with no partial
replay, an epoch that changes when history is lost, idempotent publishing, and a total
order under concurrent publishers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from football_realtime.brokers import Broker, MemoryBroker, PublishedEvent
from football_realtime.brokers.base import CriticalRetention, KeepsCritical, StoresSessions
from football_realtime.brokers.redis import RedisBroker
from football_realtime.core.events import EventType, SubscriptionType

from ..redis_cluster import RedisClusterSet
from ..redis_sentinel import SentinelSet
from ..redis_server import RedisServer
from ..support import TIMEOUT, UNIT

M = SubscriptionType.MATCHES
P = SubscriptionType.PREDICTIONS


def score(match_id: int, home: int) -> dict[str, Any]:
    return {
        "event_type": "match_score_changed",
        "data": {"match_id": match_id, "home_score": home, "away_score": 0, "minute": 10},
        "timestamp": "2025-10-29T20:25:00Z",
    }


def prediction(match_id: int, confidence: float) -> dict[str, Any]:
    return {
        "event_type": "prediction_created",
        "data": {"prediction_id": 1, "match_id": match_id, "confidence": confidence},
        "timestamp": "2025-10-29T20:25:00Z",
    }


async def until(cond: Callable[[], bool]) -> None:
    """Poll a condition the broker's reader task makes true (bounded by TIMEOUT)."""
    async with asyncio.timeout(TIMEOUT):
        while not cond():  # noqa: ASYNC110 - the condition has no event to wait on
            await asyncio.sleep(0.005)


async def until_async(cond: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not await cond():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


class Node:
    """One broker plus what it delivered."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.got: list[PublishedEvent] = []
        self.resets: list[SubscriptionType] = []

    async def start(self) -> Node:
        await self.broker.start(self.got.append, lambda st, epoch: self.resets.append(st))
        return self

    def offsets(self, stream: SubscriptionType) -> list[int]:
        return [e.offset for e in self.got if e.stream == stream]

    async def wait_delivered(self, stream: SubscriptionType, n: int) -> list[int]:
        await until(lambda: len(self.offsets(stream)) >= n)
        return self.offsets(stream)


class Backend:
    name: str

    def broker(
        self,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        critical: CriticalRetention | None = None,
    ) -> Broker:
        raise NotImplementedError

    async def lose_history(self, node: Node) -> Node:
        """Make the broker lose its history; the node that observes afterwards."""
        raise NotImplementedError


class MemoryBackend(Backend):
    name = "memory"

    def broker(
        self,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        critical: CriticalRetention | None = None,
    ) -> Broker:
        return MemoryBroker(history_size=history_size, history_ttl=history_ttl, critical=critical)

    async def lose_history(self, node: Node) -> Node:
        # A process-local broker loses its history when the process restarts.
        await node.broker.stop()
        return await Node(self.broker()).start()


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def broker(
        self,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        critical: CriticalRetention | None = None,
    ) -> Broker:
        return RedisBroker(
            self.server.url,
            history_size=history_size,
            history_ttl=history_ttl,
            critical=critical,
        )

    async def lose_history(self, node: Node) -> Node:
        self.server.flushall()
        return node


class SentinelBackend(Backend):
    """The Redis broker on ``redis+sentinel://``, publishing with MIN_REPLICAS=1."""

    name = "redis"

    def __init__(self, sentinels: SentinelSet) -> None:
        self.sentinels = sentinels

    def broker(
        self,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        critical: CriticalRetention | None = None,
    ) -> Broker:
        return RedisBroker(
            self.sentinels.url(),
            history_size=history_size,
            history_ttl=history_ttl,
            min_replicas=1,
            critical=critical,
        )

    async def lose_history(self, node: Node) -> Node:
        await asyncio.to_thread(self.sentinels.flushall)
        return node


class ClusterBackend(Backend):
    """The Redis broker on ``redis+cluster://``, publishing with MIN_REPLICAS=1 (every
    shard's WAIT counts that shard's replica)."""

    name = "redis"

    def __init__(self, cluster: RedisClusterSet) -> None:
        self.cluster = cluster

    def broker(
        self,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        critical: CriticalRetention | None = None,
    ) -> Broker:
        return RedisBroker(
            self.cluster.url(),
            history_size=history_size,
            history_ttl=history_ttl,
            min_replicas=1,
            critical=critical,
        )

    async def lose_history(self, node: Node) -> Node:
        await asyncio.to_thread(self.cluster.flushall)
        return node


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[SentinelSet]:
    with SentinelSet() as sentinels:
        yield sentinels


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterSet]:
    with RedisClusterSet() as cluster:
        yield cluster


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return MemoryBackend()
    if request.param == "cluster":
        cluster: RedisClusterSet = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return ClusterBackend(cluster)
    if request.param == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("sentinel_set")
        sentinels.flushall()
        return SentinelBackend(sentinels)
    srv: RedisServer = request.getfixturevalue("redis_server")
    srv.flushall()
    return RedisBackend(srv)


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    yield started
    for n in started:
        await n.broker.stop()


async def start(nodes: list[Node], broker: Broker) -> Node:
    node = await Node(broker).start()
    nodes.append(node)
    return node


async def test_offsets_start_at_one_gapless_per_stream(backend: Backend, nodes: list[Node]) -> None:
    node = await start(nodes, backend.broker())
    epoch0, top0 = await node.broker.position(M)
    assert top0 == 0
    results = [await node.broker.publish(score(1, i), M, None) for i in range(5)]
    results.append(await node.broker.publish(prediction(1, 0.8), P, None))
    assert [r.offset for r in results] == [1, 2, 3, 4, 5, 1]
    assert {r.epoch for r in results[:5]} == {epoch0}
    assert await node.wait_delivered(M, 5) == [1, 2, 3, 4, 5]
    assert await node.wait_delivered(P, 1) == [1]
    assert await node.broker.position(M) == (epoch0, 5)
    ev = node.got[0]
    assert ev.event_type == "match_score_changed" and ev.data["match_id"] == 1
    assert b'"stream":"matches"' in ev.payload and b'"offset":1' in ev.payload


async def test_history_replays_a_range_in_order(backend: Backend, nodes: list[Node]) -> None:
    node = await start(nodes, backend.broker())
    for i in range(10):
        await node.broker.publish(score(i % 3, i), M, None)
    await node.wait_delivered(M, 10)
    h = await node.broker.history(M, 4)
    assert h is not None
    assert [e.offset for e in h] == [5, 6, 7, 8, 9, 10]
    assert [e.data["home_score"] for e in h] == [4, 5, 6, 7, 8, 9]
    assert [e.payload for e in h] == [e.payload for e in node.got[4:]]
    assert await node.broker.history(M, 10) == []
    assert await node.broker.history(P, 0) == []


async def test_history_is_bounded_by_size_never_partial(
    backend: Backend, nodes: list[Node]
) -> None:
    node = await start(nodes, backend.broker(history_size=5))
    for i in range(8):
        await node.broker.publish(score(1, i), M, None)
    await node.wait_delivered(M, 8)
    assert await node.broker.history(M, 0) is None  # 1..3 are gone: no partial replay
    assert await node.broker.history(M, 2) is None
    h = await node.broker.history(M, 3)
    assert h is not None and [e.offset for e in h] == [4, 5, 6, 7, 8]


async def test_history_is_bounded_by_age(backend: Backend, nodes: list[Node]) -> None:
    ttl = 0.4 * UNIT
    node = await start(nodes, backend.broker(history_ttl=ttl))
    await node.broker.publish(score(1, 0), M, None)
    await node.broker.publish(score(1, 1), M, None)
    await node.wait_delivered(M, 2)
    h = await node.broker.history(M, 0)
    assert h is not None and len(h) == 2
    await asyncio.sleep(ttl + 0.1 * UNIT)
    assert await node.broker.history(M, 0) is None
    await node.broker.publish(score(1, 2), M, None)
    await node.wait_delivered(M, 3)
    assert await node.broker.history(M, 1) is None
    h = await node.broker.history(M, 2)
    assert h is not None and [e.offset for e in h] == [3]


def started(match_id: int) -> dict[str, Any]:
    return {
        "event_type": "match_started",
        "data": {"match_id": match_id},
        "timestamp": "2025-10-29T20:25:00Z",
    }


GOALS = CriticalRetention(types=frozenset({EventType.MATCH_SCORE_CHANGED}), ttl=600.0, size=100)


def crit(broker: Broker) -> KeepsCritical:
    assert isinstance(broker, KeepsCritical)
    return broker


async def test_critical_events_outlive_the_history(backend: Backend, nodes: list[Node]) -> None:
    node = await start(nodes, backend.broker(history_size=3, critical=GOALS))
    b = crit(node.broker)
    # 1 start, 2 goal, 3 start, 4 goal, 5..7 start: the history (3) holds 5..7. (Each
    # delivered before the next: the history is also what the reader reads.)
    evs = [started(1), score(1, 1), started(2), score(2, 1), started(3), started(4), started(5)]
    for n, ev in enumerate(evs, 1):
        await node.broker.publish(ev, M, None)
        await node.wait_delivered(M, n)
    await node.broker.publish(prediction(1, 0.9), P, None)
    await node.wait_delivered(P, 1)
    assert await node.broker.history(M, 1) is None
    got = await b.critical_history(M, 1)
    assert [e.offset for e in got] == [2, 4]
    assert [e.payload for e in got] == [node.got[1].payload, node.got[3].payload]
    assert [e.event_type for e in got] == ["match_score_changed"] * 2
    assert [e.offset for e in await b.critical_history(M, 2)] == [4]
    assert await b.critical_history(M, 4) == []
    assert [e.offset for e in await b.history_tail(M, 1)] == [5, 6, 7]
    assert [e.offset for e in await b.history_tail(M, 5)] == [6, 7]
    assert await b.history_tail(M, 7) == []
    assert await b.critical_history(P, 0) == []  # not a critical type
    assert [e.offset for e in await b.history_tail(P, 0)] == [1]


async def test_critical_events_are_bounded_by_count_and_age(
    backend: Backend, nodes: list[Node]
) -> None:
    ttl = 0.4 * UNIT
    retention = CriticalRetention(GOALS.types, ttl=ttl, size=2)
    node = await start(nodes, backend.broker(critical=retention))
    b = crit(node.broker)
    for i in range(3):
        await node.broker.publish(score(1, i), M, None)
    await node.wait_delivered(M, 3)
    assert [e.offset for e in await b.critical_history(M, 0)] == [2, 3]
    await asyncio.sleep(ttl + 0.1 * UNIT)  # (the age bound itself: time must pass)
    assert await b.critical_history(M, 0) == []
    await node.broker.publish(score(1, 3), M, None)
    await node.wait_delivered(M, 4)
    assert [e.offset for e in await b.critical_history(M, 0)] == [4]


async def test_no_critical_types_keeps_nothing_more(backend: Backend, nodes: list[Node]) -> None:
    node = await start(nodes, backend.broker(history_size=1))
    b = crit(node.broker)
    assert b.critical.types == frozenset()
    for i in range(3):
        await node.broker.publish(score(1, i), M, None)
        await node.wait_delivered(M, i + 1)
    assert await b.critical_history(M, 0) == []
    assert [e.offset for e in await b.history_tail(M, 0)] == [3]


async def test_epoch_changes_when_history_is_lost(backend: Backend, nodes: list[Node]) -> None:
    node = await start(nodes, backend.broker())
    r1 = await node.broker.publish(score(1, 0), M, None)
    await node.broker.publish(score(1, 1), M, None)
    await node.wait_delivered(M, 2)
    after = await backend.lose_history(node)
    if after is not node:
        nodes.append(after)
    r2 = await after.broker.publish(score(1, 2), M, None)
    assert r2.epoch != r1.epoch
    assert r2.offset == 1

    async def epoch_now() -> bool:
        return (await after.broker.position(M))[0] == r2.epoch

    await until_async(epoch_now)
    if after is node:
        # The instance that lived through the loss is told, for its subscribers.
        await until(lambda: M in node.resets)


async def test_idempotent_publish(backend: Backend, nodes: list[Node]) -> None:
    node = await start(nodes, backend.broker())
    a = await node.broker.publish(score(1, 0), M, "key-1")
    b = await node.broker.publish(score(1, 0), M, "key-1")
    c = await node.broker.publish(score(1, 1), M, "key-2")
    d = await node.broker.publish(score(1, 2), M, None)
    assert (a.offset, a.duplicate) == (1, False)
    assert (b.offset, b.epoch, b.duplicate) == (1, a.epoch, True)
    assert (c.offset, d.offset) == (2, 3)
    assert await node.wait_delivered(M, 3) == [1, 2, 3]
    await asyncio.sleep(0.1 * UNIT)
    assert node.offsets(M) == [1, 2, 3]


async def test_concurrent_publishers_share_one_order(backend: Backend, nodes: list[Node]) -> None:
    # memory: concurrent tasks on one process; redis: three brokers (three "instances").
    count = 3 if backend.name == "redis" else 1
    brokers = [(await start(nodes, backend.broker())) for _ in range(count)]
    per = 60

    async def publisher(node: Node, k: int) -> list[int]:
        return [(await node.broker.publish(score(k, i), M, None)).offset for i in range(per)]

    results = await asyncio.gather(*(publisher(brokers[k % count], k) for k in range(3)))
    offsets = sorted(o for r in results for o in r)
    assert offsets == list(range(1, 3 * per + 1))
    for r in results:
        assert r == sorted(r)  # each publisher's own events keep their order
    for node in brokers:
        assert await node.wait_delivered(M, 3 * per) == list(range(1, 3 * per + 1))
        # Every instance delivers the same event at the same offset.
        assert [e.payload for e in node.got] == [e.payload for e in brokers[0].got]


async def test_snapshot_keeps_the_latest_event_per_type_and_match(
    backend: Backend, nodes: list[Node]
) -> None:
    node = await start(nodes, backend.broker())
    assert await node.broker.snapshot(M) == []
    await node.broker.publish(score(1, 0), M, None)
    await node.broker.publish(score(2, 0), M, None)
    await node.broker.publish(score(1, 1), M, None)
    ended = {"event_type": "match_ended", "data": {"match_id": 2, "home_score": 0, "away_score": 0}}
    await node.broker.publish(ended, M, None)
    await node.broker.publish(prediction(1, 0.9), P, None)
    await node.wait_delivered(M, 4)
    await node.wait_delivered(P, 1)
    snap = await node.broker.snapshot(M)
    assert [(e.event_type.value, e.data["match_id"], e.offset) for e in snap] == [
        ("match_score_changed", 2, 2),
        ("match_score_changed", 1, 3),
        ("match_ended", 2, 4),
    ]
    assert snap[1].data["home_score"] == 1
    assert [e.offset for e in await node.broker.snapshot(P)] == [1]


async def test_sessions_are_stored_with_a_ttl_and_counted_per_owner(
    backend: Backend, nodes: list[Node]
) -> None:
    """The StoresSessions ability: state by id, visible to another node, expiring."""
    node = await start(nodes, backend.broker())
    other = await start(nodes, backend.broker()) if backend.name == "redis" else node
    store = node.broker
    assert isinstance(store, StoresSessions) and isinstance(other.broker, StoresSessions)
    assert await store.load_session("a" * 22) is None
    await store.save_session("a" * 22, b'{"v":1}', 60.0, "alice")
    await store.save_session("b" * 22, b'{"v":1,"x":2}', 1.5, "alice")
    await store.save_session("c" * 22, b"{}", 60.0, None)
    assert await other.broker.load_session("a" * 22) == b'{"v":1}'
    assert await other.broker.count_sessions("alice") == 2
    assert await other.broker.count_sessions("bob") == 0
    await until_async(lambda: _gone(store, "b" * 22))
    # the shorter-lived session took only itself, not the owner's index, with it
    assert await store.count_sessions("alice") == 1
    await store.touch_sessions([("a" * 22, "alice"), ("z" * 22, None)], 60.0)
    assert await store.load_session("z" * 22) is None  # a touch creates nothing
    assert await store.count_sessions("alice") == 1
    assert await store.load_session("c" * 22) == b"{}"


async def _gone(store: StoresSessions, session_id: str) -> bool:
    return await store.load_session(session_id) is None
