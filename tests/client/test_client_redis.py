"""The Python client with the Redis broker: recovery across server restarts and outages."""

from __future__ import annotations

import asyncio
from typing import Any

from football_realtime.client import ClientState, Event, RealtimeClient, RecoveryFailed
from football_realtime.publisher import Publisher

from ..client_support import FAST, TcpProxy, drain_until, score, take, until
from ..redis_server import RedisServer
from ..support import TIMEOUT, running_server, start_serve_process


def league_of(match_id: int) -> str:
    return "英超" if match_id % 2 else "西甲"


async def test_server_restart_with_redis_recovers_every_event_once() -> None:
    with RedisServer() as redis:
        env = {"REALTIME_BROKER_URL": redis.url}
        sp = start_serve_process(env)
        notices: list[RecoveryFailed] = []
        try:
            async with (
                Publisher(redis.url) as pub,
                RealtimeClient(sp.ws_url, on_recovery_failed=notices.append, **FAST) as client,
            ):
                by_match = await client.subscribe("matches", match_ids=[1, 2])
                by_league = await client.subscribe("matches", leagues=["西甲"])
                published: list[tuple[int, int]] = []

                async def publish(m: int) -> None:
                    res = await pub.publish(score(m, home=len(published), league=league_of(m)))
                    published.append((res.offset, m))

                for m in (1, 2, 3):
                    await publish(m)
                await take(client, 2)

                await asyncio.to_thread(sp.stop)  # graceful: 1012, then the process exits
                for i in range(20):  # published while no server runs
                    await publish(1 + i % 6)
                sp = await asyncio.to_thread(start_serve_process, env, sp.port)
                await until(lambda: client.stats.connections == 2)
                for i in range(10):
                    await publish(1 + i % 6)
                await publish(2)
                marker = published[-1][0]

                got = await drain_until(client, lambda it: getattr(it, "offset", None) == marker)
                assert not [it for it in got if isinstance(it, RecoveryFailed)]
                offsets = [e.offset for e in got if isinstance(e, Event) and e.offset]
                wanted = [o for o, m in sorted(published) if m in (1, 2) or league_of(m) == "西甲"]
                assert offsets == [o for o in wanted if o > 3]
                assert notices == []
                assert by_match.recovered is True and by_league.recovered is True
        finally:
            sp.stop()


async def test_subscribe_during_a_redis_outage_is_retried_until_redis_returns() -> None:
    with RedisServer(persistent=True) as redis, running_server(broker_url=redis.url) as srv:
        async with TcpProxy(srv.port) as proxy, RealtimeClient(proxy.url(), **FAST) as client:
            sub = await client.subscribe("matches", match_ids=[1])
            await asyncio.to_thread(srv.publish, score(1, home=1))
            (first,) = await take(client, 1)

            redis.stop()
            proxy.cut()  # the client reconnects while the broker is unreachable
            await until(lambda: client.stats.connections == 2)
            # Its resubscription is answered `unavailable` and retried with backoff.
            await until(lambda: srv.realtime.stats.errors_by_code.get("unavailable", 0) >= 2)
            assert client.state is not ClientState.OPEN
            late: Any = asyncio.create_task(client.subscribe("matches", match_ids=[2]))

            await asyncio.to_thread(redis.start)
            await until(lambda: client.state is ClientState.OPEN, timeout=3 * TIMEOUT)
            assert sub.recovered is True
            await late
            await asyncio.to_thread(srv.publish, score(2, home=2))
            await asyncio.to_thread(srv.publish, score(1, home=3))
            got = await take(client, 2)
            assert [e.raw["data"]["match_id"] for e in got] == [2, 1]
            assert got[0].offset == first.offset + 1


async def test_unsubscribing_while_the_resubscription_waits_releases_it() -> None:
    with RedisServer() as redis, running_server(broker_url=redis.url) as srv:
        async with TcpProxy(srv.port) as proxy, RealtimeClient(proxy.url(), **FAST) as client:
            sub = await client.subscribe("matches", match_ids=[1])
            redis.stop()
            proxy.cut()
            await until(lambda: srv.realtime.stats.errors_by_code.get("unavailable", 0) >= 1)
            assert client.state is not ClientState.OPEN
            await sub.unsubscribe()
            # Nothing left to wait for: the connection is open, without Redis.
            await until(lambda: client.state is ClientState.OPEN)
            assert client.subscriptions == []
