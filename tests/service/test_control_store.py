"""The Redis control store keeps working when redis-py's cluster client resets itself
under a command (brokers/redis_cluster.py ``closed_under_command``): the command fails
with an ``AttributeError`` on a None stream, or uvloop's ``RuntimeError: ... the handler
is closed``, instead of a ``ConnectionError``. The control reader must back off and carry
on (a dead reader would stop every disconnect and ban reaching the instance), and a
handshake's cluster-wide count falls back to the instance's own as on an outage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from football_realtime.service.control_store import Command, RedisControlStore

from ..redis_server import RedisServer
from ..support import TIMEOUT

pytestmark = pytest.mark.timeout(60)


def reset_under_command() -> list[BaseException]:
    """The two forms a command fails in when the cluster client resets under it."""
    return [
        AttributeError(
            "'NoneType' object has no attribute 'writelines'", name="writelines", obj=None
        ),
        RuntimeError(
            "unable to perform operation on <TCPTransport closed=True reading=False "
            "0x1234>; the handler is closed"
        ),
    ]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


async def test_the_control_reader_survives_a_cluster_reset_under_its_read(
    redis_server: RedisServer,
) -> None:
    reader_redis: Any = Redis.from_url(redis_server.url)
    sender_redis = Redis.from_url(redis_server.url)
    failures = reset_under_command()
    failed = asyncio.Event()
    xread = reader_redis.xread

    async def flaky_xread(*args: Any, **kwargs: Any) -> Any:
        if failures:
            exc = failures.pop(0)
            if not failures:
                failed.set()
            raise exc
        return await xread(*args, **kwargs)

    reader_redis.xread = flaky_xread
    reader = RedisControlStore(reader_redis, {}, heartbeat_interval=0.2)
    sender = RedisControlStore(sender_redis, {}, heartbeat_interval=0.2)
    got: asyncio.Queue[Command] = asyncio.Queue()
    await reader.start(got.put_nowait)
    await sender.start(lambda _c: None)
    try:
        await asyncio.wait_for(failed.wait(), TIMEOUT)  # both forms raised under reads
        await sender.send({"op": "disconnect", "user_id": "u1"}, None)
        command = await asyncio.wait_for(got.get(), TIMEOUT)
        assert command == {"op": "disconnect", "user_id": "u1"}
        assert reader.available
        assert all(not t.done() for t in reader._tasks), "a control task died"
    finally:
        await reader.stop()
        await sender.stop()
        await reader_redis.aclose()
        await sender_redis.aclose()


async def test_a_reservation_under_a_cluster_reset_counts_this_instance_alone(
    redis_server: RedisServer,
) -> None:
    redis: Any = Redis.from_url(redis_server.url)
    store = RedisControlStore(redis, {}, heartbeat_interval=0.2)
    failures = reset_under_command()
    reserve_many = store._reserve_many

    async def flaky_reserve_many(batch: Any) -> list[bool]:
        if failures:
            raise failures.pop(0)
        return await reserve_many(batch)

    store._reserve_many = flaky_reserve_many  # type: ignore[method-assign]
    await store.start(lambda _c: None)
    try:
        # Both forms: counted by this instance alone (admitted), as on an outage.
        assert await asyncio.wait_for(store.reserve("u1", "c1", 1), TIMEOUT)
        assert await asyncio.wait_for(store.reserve("u1", "c2", 1), TIMEOUT)
        assert not failures
        # The batching loop carries on: Redis counts again (limit 1: one, not two).
        assert await asyncio.wait_for(store.reserve("u2", "c3", 1), TIMEOUT)
        assert not await asyncio.wait_for(store.reserve("u2", "c4", 1), TIMEOUT)
    finally:
        await store.stop()
        await redis.aclose()
