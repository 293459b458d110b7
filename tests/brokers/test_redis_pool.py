"""REALTIME_REDIS_MAX_CONNECTIONS on every Redis broker (redis://, redis+sentinel://,
redis+cluster://): many more concurrent commands than pooled connections all succeed
(they wait for a free one), and a command that finds none within the pool timeout fails
with BrokerUnavailable (the service's ``unavailable`` / 503) instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from football_realtime.brokers import BrokerUnavailable
from football_realtime.brokers.redis import POOL_TIMEOUT, RedisBroker
from football_realtime.brokers.redis_cluster import WaitingRedisCluster
from football_realtime.brokers.sentinel import BlockingSentinelConnectionPool
from football_realtime.core.events import SubscriptionType

from ..redis_cluster import RedisClusterSet
from ..redis_sentinel import SentinelSet
from ..redis_server import RedisServer
from ..support import TIMEOUT

pytestmark = pytest.mark.timeout(120)

KINDS = ("redis", "sentinel", "cluster")


@pytest.fixture(scope="module", params=KINDS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "redis":
        with RedisServer() as r:
            yield r.url
    elif request.param == "sentinel":
        with SentinelSet(replicas=1, sentinels=1) as s:
            yield s.url()
    else:
        with RedisClusterSet(masters=3, replicas=0) as c:
            yield c.url()


@contextlib.asynccontextmanager
async def broker(url: str, max_connections: int) -> AsyncIterator[RedisBroker]:
    b = RedisBroker(
        url, history_size=100, history_ttl=60, reader=False, max_connections=max_connections
    )
    await b.start(lambda _e: None)
    try:
        yield b
    finally:
        await b.stop()


@contextlib.asynccontextmanager
async def holding_every_connection(b: RedisBroker) -> AsyncIterator[None]:
    """Keep the broker's only pooled connection (max_connections=1) busy."""
    client = b.redis
    if isinstance(client, WaitingRedisCluster):
        release = asyncio.Event()
        held = asyncio.Event()

        async def hold() -> None:
            async with client.permit():
                held.set()
                await release.wait()

        task = asyncio.create_task(hold())
        await asyncio.wait_for(held.wait(), TIMEOUT)
        try:
            yield
        finally:
            release.set()
            await task
    else:
        assert isinstance(client, Redis)
        pool = client.connection_pool
        conn = await pool.get_connection()
        try:
            yield
        finally:
            await pool.release(conn)


async def test_the_pool_is_the_waiting_kind(url: str) -> None:
    async with broker(url, 3) as b:
        client = b.redis
        if isinstance(client, WaitingRedisCluster):
            await client.ping()
            assert all(n.max_connections == 3 for n in client.get_nodes())
        else:
            assert isinstance(client, Redis)
            pool = client.connection_pool
            assert pool.max_connections == 3
            assert getattr(pool, "timeout", None) == POOL_TIMEOUT
            if url.startswith("redis+sentinel"):
                assert isinstance(pool, BlockingSentinelConnectionPool)


async def test_many_concurrent_commands_wait_for_a_small_pool(url: str) -> None:
    async with broker(url, 2) as b:
        streams = list(SubscriptionType)
        got = await asyncio.wait_for(
            asyncio.gather(*(b.position(streams[i % len(streams)]) for i in range(200))),
            TIMEOUT * 4,
        )
        assert len(got) == 200


async def test_no_free_connection_within_the_timeout_is_unavailable(url: str) -> None:
    async with broker(url, 1) as b:
        await b.position(SubscriptionType.MATCHES)  # connected (a cluster learns its nodes)
        loop = asyncio.get_running_loop()
        async with holding_every_connection(b):
            t0 = loop.time()
            with pytest.raises(BrokerUnavailable, match="No connection available"):
                await asyncio.wait_for(b.position(SubscriptionType.MATCHES), POOL_TIMEOUT * 3)
            waited = loop.time() - t0
            assert POOL_TIMEOUT * 0.9 <= waited <= POOL_TIMEOUT + TIMEOUT, waited
        # Once a connection is free again, commands go through.
        await asyncio.wait_for(b.position(SubscriptionType.MATCHES), TIMEOUT)
