"""The same guarantees through real nginx configured by deploy/nginx.conf."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from football_realtime.brokers import PublishResult
from football_realtime.publisher import Publisher

from ..cluster_support import Follower, assert_exactly, instances, score
from ..nginx_server import Nginx
from ..redis_server import RedisServer
from ..support import TIMEOUT, admin_headers

pytestmark = pytest.mark.timeout(60)


async def publish_paced(url: str, n: int, out: list[PublishResult]) -> None:
    async with Publisher(url) as p:
        for i in range(n):
            out.append(await p.publish(score(600 + i % 2, i)))
            await asyncio.sleep(0.002)


async def until_published_past(
    out: list[PublishResult], offset: int, publisher: asyncio.Task[None]
) -> None:
    """Wait until the paced publisher is past ``offset`` (or has published everything:
    a slow drain of an instance can outlast the whole run)."""
    async with asyncio.timeout(TIMEOUT):
        while (not out or out[-1].offset <= offset) and not publisher.done():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_through_nginx_instances_die_and_clients_lose_nothing() -> None:
    with (
        RedisServer() as redis,
        instances(["n1", "n2", "n3"], redis.url) as started,
        Nginx([i.port for i in started]) as nginx,
    ):
        by_name = {i.name: i for i in started}
        # REST through nginx reaches the cluster.
        r = await asyncio.to_thread(httpx.get, f"{nginx.http_url}/realtime/stats", timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.json()["cluster"]["instance_count"] == 3
        hidden = await asyncio.to_thread(httpx.get, f"{nginx.http_url}/metrics", timeout=TIMEOUT)
        assert hidden.status_code == 404
        assert (await asyncio.to_thread(started[0].get, "/metrics")).status_code == 200

        fs = [Follower("matches", {"match_ids": [600]}) for _ in range(3)] + [Follower("matches")]
        for k, f in enumerate(fs):
            await f.connect(f"{nginx.ws_url}?user_id=fan{k}")
        landed = {f.instance_ids[-1] for f in fs}
        assert len(landed) == 3, landed  # least_conn spread them over every instance
        start = fs[-1].positions["matches"]["offset"]

        # Cross-instance delivery, published through nginx's REST route.
        r = await asyncio.to_thread(
            httpx.post,
            f"{nginx.http_url}/realtime/broadcast",
            json=score(600, 0),
            headers=admin_headers(),
            timeout=TIMEOUT,
        )
        assert r.status_code == 200, r.text
        for f in fs:
            await f.wait_offset("matches", r.json()["offset"])

        progress: list[PublishResult] = []
        pub = asyncio.create_task(publish_paced(redis.url, 120, progress))
        await until_published_past(progress, start + 20, pub)
        # One instance crashes, another is drained; their clients come back via nginx.
        victim = fs[0].instance_ids[-1]
        drained = next(n for n in sorted(landed) if n != victim)
        by_name[victim].kill()
        await asyncio.to_thread(by_name[drained].terminate)
        moved = [f for f in fs if f.instance_ids[-1] in (victim, drained)]
        assert moved
        for f in moved:
            code = await f.wait_closed()
            assert code in (1006, 1011, 1012), code
        await until_published_past(
            progress, max(f.positions["matches"]["offset"] for f in fs) + 10, pub
        )
        survivor = next(n for n in by_name if n not in (victim, drained))
        for f in moved:
            ack = await f.connect(f"{nginx.ws_url}?user_id=fan{fs.index(f)}")
            assert ack["recovered"] is True, ack
            assert f.instance_ids[-1] == survivor
        await pub
        last = progress[-1].offset
        only_600 = [
            r.json()["offset"],
            *(p.offset for i, p in enumerate(progress) if i % 2 == 0),
        ]
        for f in fs:
            if f.filters:
                await f.wait_offset("matches", only_600[-1])
                assert_exactly(f.offsets("matches"), only_600)
            else:
                await f.wait_offset("matches", last)
                assert_exactly(f.offsets("matches"), list(range(start + 1, last + 1)))
        for f in fs:
            await f.close()
        # The access log names the route but never the query string (tokens live there).
        async with asyncio.timeout(TIMEOUT):
            while nginx.access_log().count("/realtime/ws ") < len(fs) + len(moved):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert "fan0" not in nginx.access_log() and "user_id" not in nginx.access_log()
