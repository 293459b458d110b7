"""The Redis connection pool under a burst of handshakes (REALTIME_REDIS_MAX_CONNECTIONS):
every Redis client of an instance waits for a free connection instead of failing, so
many more concurrent handshakes and subscribes than pooled connections all succeed.
A real ``serve`` on a real redis-server, JWT users."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import websockets
from redis.asyncio import BlockingConnectionPool, Redis

from football_realtime.service.control_store import RedisControlStore, user_conns_key

from ..cluster_support import instances
from ..redis_server import RedisServer
from ..support import TIMEOUT, token

pytestmark = pytest.mark.timeout(120)

CLIENTS = 250
POOL = 8


async def _subscriber(url: str, user: str, start: asyncio.Event) -> dict[str, Any]:
    """Handshake with a JWT and subscribe: the subscribe's reply (ack or error)."""
    await start.wait()
    async with websockets.connect(f"{url}?token={token(user)}", open_timeout=TIMEOUT * 4) as ws:
        hello = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT * 4))
        assert hello["data"].get("status") == "connected", hello
        await ws.send(
            orjson.dumps(
                {"type": "subscribe", "id": "s1", "data": {"subscription_type": "matches"}}
            ).decode()
        )
        while True:
            msg: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT * 4))
            if msg["event_type"] in ("message_ack", "error") and msg["data"].get("id") == "s1":
                return msg


async def test_many_concurrent_subscribers_share_a_small_pool() -> None:
    with (
        RedisServer() as redis,
        instances(
            ["pool"],
            redis.url,
            REALTIME_REDIS_MAX_CONNECTIONS=str(POOL),
            # Every client comes from 127.0.0.1: the per-address limit (100) is not tested.
            REALTIME_MAX_CONNECTIONS_PER_IP=str(CLIENTS * 2),
        ) as (inst,),
    ):
        start = asyncio.Event()
        tasks = [
            asyncio.create_task(_subscriber(inst.ws_url, f"u{i}", start)) for i in range(CLIENTS)
        ]
        start.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [r for r in results if not isinstance(r, dict) or r["event_type"] != "message_ack"]
        log = inst.log()
        assert not failed, (len(failed), failed[:3], log[-3000:])
        assert "Too many connections" not in log, log[-3000:]
        clients = int(redis.command("CLIENT", "LIST").count(b"\n"))
        assert clients <= 2 * POOL + 4, clients  # the main pool and the reader's


async def test_a_burst_of_reservations_shares_one_connection() -> None:
    """The per-user count of 300 concurrent handshakes of one user (limit 10), on a client
    of two pooled connections (the control channel's reader holds one in its XREAD BLOCK):
    batched into pipelines on the other, exactly 10 are admitted, each handshake gets its
    own answer, and a released one frees a place."""
    with RedisServer() as redis:
        client = Redis.from_pool(
            BlockingConnectionPool.from_url(redis.url, max_connections=2, timeout=TIMEOUT)
        )
        store = RedisControlStore(client, {}, heartbeat_interval=1.0)
        await store.start(lambda _c: None)
        try:
            oks = await asyncio.wait_for(
                asyncio.gather(*(store.reserve("fan", f"c{i}", 10) for i in range(300))),
                TIMEOUT,
            )
            assert sum(oks) == 10, oks
            admitted = [f"c{i}" for i, ok in enumerate(oks) if ok]
            held = await client.zrange(user_conns_key("fan"), 0, -1)
            assert sorted(m.decode() for m in held) == sorted(admitted)
            assert await store.reserve("fan", admitted[0], 10)  # already counted: kept
            assert not await store.reserve("fan", "late", 10)
            store.release("fan", admitted[0])
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while not await store.reserve("fan", "late", 10):
                assert asyncio.get_running_loop().time() < deadline, "release not applied"
                await asyncio.sleep(0.02)
        finally:
            await store.stop()
            await client.aclose()
