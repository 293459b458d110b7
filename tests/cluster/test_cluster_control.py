"""Cluster-wide control (issue 15, item 4; security catalogue S10): an administrator
disconnects and bans a user on every instance, and the per-user connection limit counts
the user's connections on every instance. Memory (one instance) and two real ``serve``
instances on one real redis-server, on a Sentinel set and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
import websockets

from ..cluster_support import instances
from ..redis_cluster import RedisClusterSet
from ..redis_sentinel import SentinelSet
from ..redis_server import RedisServer
from ..support import TIMEOUT, admin_headers, running_server, token

pytestmark = pytest.mark.timeout(90)


async def closed_with(ws: Any, timeout: float = TIMEOUT) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes: (code, reason, messages received before)."""
    got: list[dict[str, Any]] = []
    try:
        while True:
            got.append(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None, got
        return exc.rcvd.code, exc.rcvd.reason, got


async def connected(url: str, user: str) -> websockets.ClientConnection:
    ws = await websockets.connect(f"{url}?token={token(user)}", open_timeout=TIMEOUT)
    hello = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert hello["event_type"] == "connection_status", hello
    assert hello["data"]["status"] == "connected", hello
    return ws


async def refused(url: str, user: str) -> tuple[int, str, list[dict[str, Any]]]:
    async with websockets.connect(f"{url}?token={token(user)}", open_timeout=TIMEOUT) as ws:
        return await closed_with(ws)


def disconnect(http_url: str, user: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
    return httpx.post(
        f"{http_url}/realtime/users/{user}/disconnect",
        json=body,
        headers=kw.pop("headers", admin_headers()),
        timeout=TIMEOUT,
    )


# -- memory: one instance ----------------------------------------------------------


async def test_memory_disconnect_and_ban_then_accept_after_the_ban() -> None:
    with running_server() as s:
        ws = await connected(s.ws_url, "villain")
        bystander = await connected(s.ws_url, "bystander")
        r = await asyncio.to_thread(
            disconnect, s.http_url, "villain", {"ban_seconds": LONG_BAN, "reason": "abuse"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["closed_here"] == 1 and r.json()["banned_until"]
        code, reason, got = await closed_with(ws)
        assert code == 4506 and "abuse" in reason
        assert got[-1]["data"]["status"] == "closing" and got[-1]["data"]["reconnect"] is False
        code, reason, got = await refused(s.ws_url, "villain")
        assert code == 4506 and "banned" in reason
        assert got[0]["event_type"] == "error" and got[0]["data"]["code"] == "banned"
        await bystander.send(orjson.dumps({"type": "heartbeat", "id": 1}).decode())
        assert orjson.loads(await bystander.recv())["event_type"] == "message_ack"
        # The end of a ban: a short one on another user.
        until = await asyncio.to_thread(ban, s.http_url, "brief", SHORT_BAN, "cool down")
        await accepted_once_over(s.ws_url, "brief", until)
        await bystander.close()


async def test_memory_disconnect_without_ban_and_admin_only() -> None:
    with running_server() as s:
        ws = await connected(s.ws_url, "u1")
        r = await asyncio.to_thread(
            disconnect, s.http_url, "u1", None, headers={"Authorization": f"Bearer {token('u1')}"}
        )
        assert r.status_code == 403
        r = await asyncio.to_thread(disconnect, s.http_url, "u1", None, headers={})
        assert r.status_code == 401
        r = await asyncio.to_thread(disconnect, s.http_url, "u1", {"ban_seconds": -1})
        assert r.status_code == 422
        r = await asyncio.to_thread(disconnect, s.http_url, "u1")
        assert r.status_code == 200 and r.json() == {"user_id": "u1", "closed_here": 1}
        code, _, _ = await closed_with(ws)
        assert code == 4506
        again = await connected(s.ws_url, "u1")  # no ban: welcome back
        await again.close()


async def test_memory_pending_auth_of_a_banned_user_is_refused() -> None:
    with running_server(require_auth=True) as s:
        r = await asyncio.to_thread(disconnect, s.http_url, "late", {"ban_seconds": 30})
        assert r.status_code == 200
        async with websockets.connect(s.ws_url, open_timeout=TIMEOUT) as ws:
            await ws.send(
                orjson.dumps({"type": "auth", "id": 1, "data": {"token": token("late")}}).decode()
            )
            code, _, got = await closed_with(ws)
        assert code == 4506 and got[0]["data"]["code"] == "banned"


# -- two instances on one Redis, on Sentinel and on Cluster ----------------------------


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


@pytest.fixture(params=["single", "sentinel", "cluster"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """A clean topology (each started once per module), as a broker URL."""
    if request.param == "cluster":
        cluster: RedisClusterSet = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return cluster.url()
    if request.param == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("sentinel_set")
        sentinels.flushall()
        return sentinels.url()
    srv: RedisServer = request.getfixturevalue("redis_server")
    srv.flushall()
    return srv.url


def ban(http_url: str, user: str, seconds: float, reason: str) -> float:
    """Ban ``user`` through ``http_url``: the ban's end (unix seconds) as reported."""
    r = disconnect(http_url, user, {"ban_seconds": seconds, "reason": reason})
    assert r.status_code == 200, r.text
    return datetime.fromisoformat(r.json()["banned_until"]).timestamp()


async def assert_banned(url: str, user: str, where: str) -> None:
    code, reason, got = await refused(url, user)
    assert code == 4506 and "banned" in reason, (where, code, reason)
    assert got[0]["data"]["code"] == "banned", (where, got)


async def first_answer(url: str, user: str) -> tuple[float, str, float]:
    """Open a connection for ``user`` and read the server's first message: (unix time
    before connecting, ``"connected"`` or the error code, unix time it was received)."""
    sent = time.time()
    async with websockets.connect(f"{url}?token={token(user)}", open_timeout=TIMEOUT) as ws:
        first = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    received = time.time()
    if first["event_type"] == "connection_status":
        assert first["data"]["status"] == "connected", first
        return sent, "connected", received
    return sent, str(first["data"]["code"]), received


async def accepted_once_over(url: str, user: str, until: float) -> None:
    """Connect ``user`` once its ban (ending at ``until``) is over; retried while the
    instance still says banned, within TIMEOUT of the end."""
    await asyncio.sleep(max(0.0, until - time.time()))  # nothing to try before the end
    deadline = time.monotonic() + TIMEOUT
    while True:
        _, answer, received = await first_answer(url, user)
        if answer == "connected":
            assert received >= until, "accepted before the ban's end"
            return
        assert answer == "banned", answer
        assert time.monotonic() < deadline, f"still banned {TIMEOUT} s after the ban's end"
        await asyncio.sleep(0.05)


#: Longer than anything the refusal checks can take, even on a loaded machine.
LONG_BAN = 600.0
#: Short enough to wait for; its end is checked by a test of its own.
SHORT_BAN = 2.0


async def test_ban_closes_the_user_on_every_instance_and_refuses_it_until_it_ends(
    broker_url: str,
) -> None:
    with instances(["x", "y"], broker_url) as (x, y):
        on_x = await connected(x.ws_url, "villain")
        on_y = await connected(y.ws_url, "villain")
        other = await connected(y.ws_url, "bystander")
        # The contract: closed on every instance within one second of the request.
        t0 = time.monotonic()
        closing = asyncio.gather(closed_with(on_x), closed_with(on_y))
        until = await asyncio.to_thread(ban, x.http_url, "villain", LONG_BAN, "spam")
        (cx, rx, _), (cy, ry, gy) = await closing
        elapsed = time.monotonic() - t0
        assert (cx, cy) == (4506, 4506) and "spam" in rx and "spam" in ry
        assert gy[-1]["data"]["status"] == "closing"
        assert elapsed < 1.0, elapsed
        assert until > time.time() + LONG_BAN / 2
        # Refused on both instances while banned (the ban lasts far longer than this).
        for inst in (x, y):
            await assert_banned(inst.ws_url, "villain", inst.name)
        # The bystander is untouched.
        await other.send(orjson.dumps({"type": "heartbeat", "id": 1}).decode())
        assert orjson.loads(await other.recv())["event_type"] == "message_ack"
        # A third instance started during the ban knows it from Redis.
        with instances(["z"], broker_url) as (z,):
            await assert_banned(z.ws_url, "villain", z.name)

        # The end of a ban, with a short one on another user: refused on every
        # instance while it lasts (checked only when the check starts before its end),
        # then accepted again on every instance once the reported end has passed.
        brief_x = await connected(x.ws_url, "brief")
        until = await asyncio.to_thread(ban, y.http_url, "brief", SHORT_BAN, "cool down")
        code, _, _ = await closed_with(brief_x)
        assert code == 4506
        for inst in (x, y):
            # However slow the machine: accepted only if the answer came after the end,
            # refused only if the attempt started before it.
            sent, answer, received = await first_answer(inst.ws_url, "brief")
            if answer == "connected":
                assert received >= until, (inst.name, "accepted during the ban")
            else:
                # (banned_until is reported in milliseconds, rounded down)
                assert answer == "banned" and sent <= until + 0.01, (inst.name, answer, sent)
        for inst in (x, y):
            await accepted_once_over(inst.ws_url, "brief", until)
        await other.close()


async def test_the_per_user_limit_counts_every_instance(broker_url: str) -> None:
    with instances(["x", "y"], broker_url, REALTIME_MAX_CONNECTIONS_PER_USER="2") as (x, y):
        a = await connected(x.ws_url, "many")
        b = await connected(y.ws_url, "many")
        for inst in (x, y):
            code, reason, got = await refused(inst.ws_url, "many")
            assert code == 4504, (inst.name, code, reason)
            assert "on every instance" in reason or "per user" in reason
            assert got[0]["data"]["code"] == "limit_exceeded"
        other = await connected(x.ws_url, "someone-else")
        # A slot freed on one instance is usable on the other.
        await a.close()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                c = await connected(y.ws_url, "many")
                break
            except AssertionError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        await c.close()
        await b.close()
        await other.close()


async def test_a_crashed_instance_s_connections_stop_counting() -> None:
    with (
        RedisServer() as redis,
        instances(["x", "y"], redis.url, REALTIME_MAX_CONNECTIONS_PER_USER="1") as (x, y),
    ):
        await connected(x.ws_url, "solo")
        code, _, _ = await refused(y.ws_url, "solo")
        assert code == 4504
        x.kill()  # its entries expire after three heartbeats (0.5 s each here)
        deadline = time.monotonic() + 3 * 0.5 + TIMEOUT
        while True:
            async with websockets.connect(
                f"{y.ws_url}?token={token('solo')}", open_timeout=TIMEOUT
            ) as ws:
                first = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                if first["event_type"] == "connection_status":
                    break
            assert time.monotonic() < deadline, "the crashed instance's connection still counts"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("how", ["demoted", "killed"])
async def test_a_ban_reaches_every_instance_after_a_sentinel_failover(how: str) -> None:
    """The control reader follows the master: after a failover (the master demoted by
    ``SENTINEL FAILOVER``, or SIGKILLed), a ban sent through one instance closes the user
    on the other and is enforced on both."""
    with SentinelSet() as sentinels, instances(["x", "y"], sentinels.url()) as (x, y):
        old = sentinels.manual_failover() if how == "demoted" else sentinels.kill_master()
        await asyncio.to_thread(sentinels.wait_new_master, old)
        on_y = await connected(y.ws_url, "villain")
        closing = asyncio.ensure_future(closed_with(on_y, TIMEOUT * 2))
        deadline = time.monotonic() + TIMEOUT * 2
        while True:  # x may answer 503 until its client has found the new master
            r = await asyncio.to_thread(
                disconnect, x.http_url, "villain", {"ban_seconds": LONG_BAN, "reason": "spam"}
            )
            if r.status_code == 200:
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            await asyncio.sleep(0.1)
        code, reason, _ = await closing
        assert code == 4506 and "spam" in reason, (code, reason)
        for inst in (x, y):
            await assert_banned(inst.ws_url, "villain", inst.name)
