"""Redis faults under real instances: a restart that loses history, and an outage."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
import websockets

from ..cluster_support import Follower, Instance, instances, score, with_token
from ..redis_server import RedisServer
from ..support import TIMEOUT

pytestmark = pytest.mark.timeout(60)


async def wait_health(inst: Instance, status: int) -> httpx.Response:
    deadline = time.monotonic() + TIMEOUT
    while True:
        r = await asyncio.to_thread(inst.get, "/realtime/health")
        if r.status_code == status:
            return r
        assert time.monotonic() < deadline, (r.status_code, r.text)
        await asyncio.sleep(0.05)


async def test_redis_restart_without_persistence_changes_epoch_and_clients_are_told() -> None:
    with RedisServer() as redis, instances(["x", "y"], redis.url) as (x, y):
        f = Follower("matches")
        await f.connect(x.ws_url)
        old_epoch = f.positions["matches"]["epoch"]
        for i in range(3):
            assert y.broadcast(score(1, i)).status_code == 200
        await f.wait_offset("matches", 3)

        await asyncio.to_thread(redis.restart)  # a new, empty Redis on the same address
        # The instance notices the new epoch and asks the stream's subscribers to
        # reconnect and recover (4002), instead of going on with reused offsets.
        assert await f.wait_closed(TIMEOUT) == 4002
        await wait_health(x, 200)
        ack = await f.connect(y.ws_url)
        assert ack["recovered"] is False
        assert "epoch" in ack["reason"], ack
        new_epoch = ack["streams"]["matches"]["epoch"]
        assert new_epoch != old_epoch
        r = x.broadcast(score(1, 9))
        assert r.status_code == 200 and r.json()["epoch"] == new_epoch
        await f.wait_offset("matches", r.json()["offset"])
        assert f.events[-1]["data"]["home_score"] == 9
        await f.close()


async def test_redis_outage_gives_503_and_the_service_recovers_without_restart() -> None:
    with RedisServer(persistent=True) as redis, instances(["x", "y"], redis.url) as (x, y):
        f = Follower("matches")
        await f.connect(x.ws_url)
        for i in range(3):
            assert y.broadcast(score(2, i)).status_code == 200
        await f.wait_offset("matches", 3)

        await asyncio.to_thread(redis.stop)
        t0 = time.monotonic()
        r = await asyncio.to_thread(y.broadcast, score(2, 99))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "broker unavailable" in r.json()["detail"]
        assert time.monotonic() - t0 < 2.5  # a clear answer, fast: never a silent drop
        health = (await wait_health(x, 503)).json()
        assert health["status"] == "degraded" and health["broker_healthy"] is False
        await wait_health(y, 503)
        # A subscribe meanwhile gets a clear error; the connection stays usable.
        async with websockets.connect(with_token(y.ws_url), open_timeout=TIMEOUT) as ws:
            await ws.recv()
            await ws.send(
                orjson.dumps(
                    {"type": "subscribe", "id": 1, "data": {"subscription_type": "odds"}}
                ).decode()
            )
            err = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert err["event_type"] == "error" and err["data"]["code"] == "unavailable", err
        stats = (await asyncio.to_thread(x.get, "/realtime/stats")).json()
        assert stats["cluster"]["registry_available"] is False
        # The client stays connected through the outage.
        assert not f.close_codes

        await asyncio.to_thread(redis.start)  # same address, AOF kept every write
        await wait_health(x, 200)
        await wait_health(y, 200)
        r = y.broadcast(score(2, 4))
        assert r.status_code == 200 and r.json()["offset"] == 4, r.text
        await f.wait_offset("matches", 4)
        assert f.offsets("matches") == [1, 2, 3, 4]
        assert not f.close_codes  # same epoch: nothing to recover, nothing lost
        await f.close()
