"""After a Redis restart without persistence (a new epoch), every event published after
it reaches every subscriber: the resubscription says ``recovered: false`` (the old
epoch's tail may be lost) and replays the new epoch from its first offset."""

from __future__ import annotations

import asyncio

import pytest

from football_realtime.client import Event, RealtimeClient, RecoveryFailed
from football_realtime.publisher import Publisher

from ..client_support import FAST, drain_until
from ..client_support import score as client_score
from ..cluster_support import Follower, assert_exactly, instances, score
from ..redis_server import RedisServer
from ..support import TIMEOUT, start_serve_process

pytestmark = pytest.mark.timeout(90)


async def test_a_follower_gets_the_new_epoch_replayed_after_a_redis_restart() -> None:
    with RedisServer() as redis, instances(["x", "y"], redis.url) as (x, y):
        f = Follower("matches")
        await f.connect(x.ws_url)
        old_epoch = f.positions["matches"]["epoch"]
        for i in range(3):
            assert y.broadcast(score(1, i)).status_code == 200
        await f.wait_offset("matches", 3)

        await asyncio.to_thread(redis.restart)  # empty: a new epoch
        assert await f.wait_closed(TIMEOUT) == 4002
        # Published on the new epoch before the follower is back.
        published = []
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while len(published) < 5:
            r = await asyncio.to_thread(y.broadcast, score(1, 10 + len(published)))
            if r.status_code == 200:
                published.append(r.json()["offset"])
            else:
                assert asyncio.get_running_loop().time() < deadline, r.text
                await asyncio.sleep(0.05)
        assert published == [1, 2, 3, 4, 5]
        before = len(f.events)
        ack = await f.connect(x.ws_url)
        assert ack["recovered"] is False
        assert "epoch changed" in ack["reason"] and "replayed from offset 1" in ack["reason"]
        pos = ack["streams"]["matches"]
        assert pos["epoch"] != old_epoch and pos["replay_after"] == 0
        assert pos["recovered"] is False
        r = y.broadcast(score(1, 99))
        assert r.status_code == 200 and r.json()["offset"] == 6
        await f.wait_offset("matches", 6)
        await asyncio.sleep(0.3)  # nothing late follows
        assert_exactly([e["offset"] for e in f.events[before:]], [1, 2, 3, 4, 5, 6])
        await f.close()


async def test_the_python_client_delivers_the_new_epoch_once_in_order() -> None:
    with RedisServer() as redis:
        env = {"REALTIME_BROKER_URL": redis.url}
        sp = start_serve_process(env)
        notices: list[RecoveryFailed] = []
        try:
            async with RealtimeClient(
                sp.ws_url, on_recovery_failed=notices.append, **FAST
            ) as client:
                sub = await client.subscribe("matches", match_ids=[1])
                async with Publisher(redis.url) as pub:
                    for i in range(3):
                        await pub.publish(client_score(1, home=i))
                got = await drain_until(client, lambda it: getattr(it, "offset", None) == 3)
                assert [e.offset for e in got if isinstance(e, Event) and e.offset] == [1, 2, 3]

                await asyncio.to_thread(sp.stop)
                await asyncio.to_thread(redis.restart)  # the old epoch's history is gone
                async with Publisher(redis.url) as pub:
                    for i in range(4):  # the new epoch, while no server runs
                        await pub.publish(client_score(1, home=10 + i))
                    sp = await asyncio.to_thread(start_serve_process, env, sp.port)
                    got = await drain_until(client, lambda it: getattr(it, "offset", None) == 4)
                    await pub.publish(client_score(1, home=20))
                    got += await drain_until(client, lambda it: getattr(it, "offset", None) == 5)
                kinds = [
                    "notice" if isinstance(it, RecoveryFailed) else it.offset
                    for it in got
                    if isinstance(it, RecoveryFailed) or (isinstance(it, Event) and it.offset)
                ]
                assert kinds == ["notice", 1, 2, 3, 4, 5], kinds
                assert len(notices) == 1 and "replayed from offset 1" in notices[0].reason
                assert sub.recovered is False
        finally:
            sp.stop()
