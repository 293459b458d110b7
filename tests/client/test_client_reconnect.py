"""The Python client when connections break: reconnect, resubscribe, recover, give up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from football_realtime.client import (
    ClientState,
    Event,
    RealtimeClient,
    ReconnectFailed,
    RecoveryFailed,
    TerminalCloseError,
)
from football_realtime.core.close_codes import CloseCode

from ..client_support import (
    FAST,
    TcpProxy,
    apublish,
    drain,
    is_notice,
    pred,
    refusing_listener,
    score,
    take,
    until,
    valid_token,
)
from ..support import TIMEOUT, UNIT, RunningServer, post_broadcast, start_serve_process


def drop_all(srv: RunningServer, code: int = CloseCode.RECONNECT, abort: bool = True) -> None:
    def run() -> None:
        for conn in list(srv.realtime.hub.connections.values()):
            conn.close(code, "test", abort=abort)

    srv.call(run)


def league_of(match_id: int) -> str:
    return "英超" if match_id % 2 else "西甲"


async def test_dropped_connection_recovers_every_event_exactly_once_in_order(
    server: RunningServer,
) -> None:
    srv = server
    async with TcpProxy(srv.port) as proxy, RealtimeClient(proxy.url(), **FAST) as client:
        # Two subscriptions on one stream: their replays overlap and interleave.
        by_match = await client.subscribe("matches", match_ids=[1, 2])
        by_league = await client.subscribe("matches", leagues=["西甲"])

        def wanted(m: int) -> bool:
            return m in (1, 2) or league_of(m) == "西甲"

        published: list[tuple[int, int]] = []  # (offset, match)

        async def publish(m: int) -> None:
            res = await apublish(srv, score(m, home=len(published), league=league_of(m)))
            published.append((res.offset, m))

        for m in (1, 2, 3, 4):
            await publish(m)
        await take(client, 3)  # 1, 2, 4 match

        # The network fails; while the client cannot get back, 30 events are published.
        proxy.refusing = True
        proxy.cut()
        for i in range(30):
            await publish(1 + i % 6)

        async def live() -> None:  # keeps publishing while the client resubscribes
            for i in range(30):
                await publish(1 + i % 6)

        proxy.refusing = False
        publisher = asyncio.create_task(live())
        await publisher
        await publish(2)  # a marker after everything
        marker = published[-1][0]
        got: list[Event[Any]] = []

        async def collect() -> None:
            async for item in client:
                assert not isinstance(item, RecoveryFailed), item
                if isinstance(item, Event) and item.offset is not None:
                    got.append(item)
                    if item.offset == marker:
                        return

        await asyncio.wait_for(collect(), TIMEOUT)
        expected = [o for o, m in sorted(published) if wanted(m) and o > 4]
        assert [e.offset for e in got] == expected
        assert by_match.recovered is True and by_league.recovered is True
        assert client.stats.recoveries == 2
        assert client.stats.connections == 2
        # Both subscriptions replayed the 西甲 events of match 2: the copies were dropped.
        assert client.stats.duplicates_dropped >= 1
        # Each subscription's own iterator saw its events once, in order.
        everything = [(o, m) for o, m in sorted(published) if wanted(m)]
        for sub, mine in (
            (by_league, [o for o, m in everything if league_of(m) == "西甲"]),
            (by_match, [o for o, m in everything if m in (1, 2)]),
        ):
            assert [e.offset for e in await take(sub, len(mine))] == mine


async def test_server_restart_reconnects_resubscribes_and_reports_no_recovery() -> None:
    sp = start_serve_process()
    notices: list[RecoveryFailed] = []
    states: list[ClientState] = []
    try:
        async with RealtimeClient(sp.ws_url, on_recovery_failed=notices.append, **FAST) as client:
            client.on("client_state", states.append)
            sub = await client.subscribe("predictions", match_ids=[1])
            r = await asyncio.to_thread(post_broadcast, sp, pred(match_id=1))
            assert r.status_code == 200, r.text
            (first,) = await take(client, 1)
            old_epoch = client.positions["predictions"]["epoch"]

            await asyncio.to_thread(sp.stop)  # graceful: clients get 1012
            sp = await asyncio.to_thread(start_serve_process, None, sp.port)

            (notice,) = await take(client, 1, pred=is_notice)
            assert notice.subscription is sub
            assert notice.streams == ("predictions",)
            assert "epoch" in notice.reason
            assert notices == [notice]
            assert sub.recovered is False
            assert client.positions["predictions"]["epoch"] != old_epoch
            r = await asyncio.to_thread(post_broadcast, sp, pred(prediction_id=2, match_id=1))
            assert r.status_code == 200, r.text
            (after,) = await take(client, 1)
            # Offsets restart with the new epoch, and the event is not taken for a duplicate.
            assert (after.offset, after.raw["data"]["prediction_id"]) == (1, 2)
            assert ClientState.RECONNECTING in states and states[-1] is ClientState.OPEN
            assert first.offset == 1
    finally:
        sp.stop()


async def test_silent_connection_is_detected_by_heartbeats(server: RunningServer) -> None:
    states: list[ClientState] = []
    async with (
        TcpProxy(server.port) as proxy,
        RealtimeClient(
            proxy.url(), heartbeat_interval=0.1 * UNIT, heartbeat_timeout=0.2 * UNIT, **FAST
        ) as client,
    ):
        client.on("client_state", states.append)
        await client.subscribe("matches", match_ids=[1])
        cid = client.connection_info["connection_id"]
        conn = server.realtime.hub.connections[cid]
        # subscribe + setup barrier, then periodic heartbeats
        await until(lambda: conn.messages_received >= 5)
        proxy.freeze()
        t0 = time.monotonic()
        await until(lambda: client.stats.connections == 2 and client.state is ClientState.OPEN)
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.2 * UNIT  # waited for the silence bound, not less
        assert states[-2:] == [ClientState.RECONNECTING, ClientState.OPEN]
        await apublish(server, score(1))
        (ev,) = await take(client, 1)
        assert ev.raw["data"]["match_id"] == 1


async def test_gives_up_after_max_attempts_when_the_server_is_gone() -> None:
    async with refusing_listener() as (port, accepted):
        t0 = time.monotonic()
        with pytest.raises(ReconnectFailed) as ei:
            async with RealtimeClient(
                f"ws://127.0.0.1:{port}/realtime/ws", max_reconnect_attempts=3, **FAST
            ):
                pass
        assert ei.value.attempts == 3
        assert len(accepted) == 3
        assert "3 failed connection attempt" in str(ei.value)
        assert time.monotonic() - t0 < TIMEOUT


async def test_gives_up_mid_stream_with_a_clear_error(server: RunningServer) -> None:
    async with TcpProxy(server.port) as proxy:
        client = RealtimeClient(proxy.url(), max_reconnect_attempts=4, **FAST)
        await client.connect()
        sub = await client.subscribe("matches")
        server.stop()  # the server is gone for good; the proxy still accepts
        t0 = time.monotonic()
        with pytest.raises(ReconnectFailed) as ei:
            await drain(client)
        assert ei.value.attempts == 4
        assert proxy.accepted == 1 + 4
        with pytest.raises(ReconnectFailed):
            await drain(sub)
        with pytest.raises(ReconnectFailed):
            await client.wait_closed()
        with pytest.raises(ReconnectFailed):
            await client.subscribe("odds")
        assert client.state is ClientState.CLOSED
        assert time.monotonic() - t0 < TIMEOUT
        await client.close()


@pytest.mark.parametrize(
    ("code", "provider", "reconnects"),
    [
        (CloseCode.FORBIDDEN, False, False),
        (CloseCode.UNAUTHORIZED, True, False),
        (CloseCode.DISCONNECTED_BY_ADMIN, False, False),
        (CloseCode.NORMAL, False, False),
        (CloseCode.TOKEN_EXPIRED, False, False),
        (CloseCode.TOKEN_EXPIRED, True, True),
        (CloseCode.RECONNECT, False, True),
        (CloseCode.SLOW_CONSUMER, False, True),
        (CloseCode.SERVICE_RESTART, False, True),
    ],
)
async def test_close_codes_decide_whether_to_reconnect(
    server: RunningServer, code: int, provider: bool, reconnects: bool
) -> None:
    stats = server.realtime.stats
    kw: dict[str, Any] = {"token_provider": valid_token} if provider else {}
    async with RealtimeClient(server.ws_url, **kw, **FAST) as client:
        await client.subscribe("matches")
        drop_all(server, code, abort=False)
        if reconnects:
            await until(lambda: client.stats.connections == 2 and client.state is ClientState.OPEN)
            assert stats.connections_opened == 2
            return
        with pytest.raises(TerminalCloseError) as ei:
            await drain(client)
        assert ei.value.code == code
        # Several backoff periods later, still no new connection.
        await asyncio.sleep(0.3 * UNIT)
        assert stats.connections_opened == 1
        assert client.state is ClientState.CLOSED


async def test_token_provider_is_asked_on_every_connect(server: RunningServer) -> None:
    issued: list[str] = []

    async def provider() -> str:
        await asyncio.sleep(0)
        issued.append(valid_token("u1", len(issued)))
        return issued[-1]

    async with TcpProxy(server.port) as proxy:
        async with RealtimeClient(
            proxy.url(), **{**FAST, "user_id": "u1", "token": None, "token_provider": provider}
        ) as client:
            drop_all(server)
            await until(lambda: client.stats.connections == 2 and client.state is ClientState.OPEN)
        assert len(issued) == 2 and issued[0] != issued[1]
        lines = [r.split(b"\r\n", 1)[0] for r in proxy.requests]
        assert f"token={issued[0]}".encode() in lines[0] and b"user_id=u1" in lines[0]
        assert f"token={issued[1]}".encode() in lines[1]

        tok = valid_token()
        async with RealtimeClient(
            proxy.url(), **{**FAST, "token": tok, "token_transport": "header"}
        ):
            pass
        assert f"Authorization: Bearer {tok}".encode() in proxy.requests[2]
        assert b"token=" not in proxy.requests[2].split(b"\r\n", 1)[0]


async def test_replay_from_an_older_position_skips_what_predates_a_subscription(
    server: RunningServer,
) -> None:
    async with TcpProxy(server.port) as proxy, RealtimeClient(proxy.url(), **FAST) as client:
        first = await client.subscribe("matches", match_ids=[1])
        await apublish(server, score(1))  # offset 1, seen
        await take(client, 1)
        await apublish(server, score(2))  # offsets 2, 3: before `later` exists
        await apublish(server, score(2))
        later = await client.subscribe("matches", match_ids=[2])
        # The client's recovery point stays at 1 (the ack's offset is trusted only a
        # heartbeat round later), so the resubscription replays 2 and 3 for `later`.
        proxy.cut()
        await until(lambda: client.stats.connections == 2 and client.state is ClientState.OPEN)
        assert first.recovered is True and later.recovered is True
        await apublish(server, score(2))  # offset 4
        (ev,) = await take(client, 1)
        assert ev.offset == 4
        assert [e.offset for e in await take(later, 1)] == [4]


async def test_dedicated_endpoint_events_reach_the_client(server: RunningServer) -> None:
    url = server.ws_url + "/matches?match_ids=1"
    async with RealtimeClient(url, **FAST) as client:
        await until(lambda: len(server.realtime.hub.index) == 1)
        await apublish(server, score(2))
        await apublish(server, score(1))
        (ev,) = await take(client, 1)
        assert (ev.offset, ev.raw["data"]["match_id"]) == (2, 1)


async def test_positions_advance_to_acked_offsets_after_a_heartbeat_round(
    server: RunningServer,
) -> None:
    opts = {**FAST, "heartbeat_interval": 0.05 * UNIT}
    async with RealtimeClient(server.ws_url, **opts) as client:
        await client.subscribe("matches", match_ids=[1])
        assert client.positions["matches"]["offset"] == 0
        for _ in range(3):
            await apublish(server, score(2))  # not for this client
        await client.subscribe("matches", match_ids=[3])
        assert client.positions["matches"]["offset"] == 0
        cid = client.connection_info["connection_id"]
        beats = server.realtime.hub.connections[cid].messages_received
        await until(lambda: client.positions["matches"]["offset"] == 3)
        # Not before two heartbeat replies (the ack's offset may be ahead of delivery).
        assert server.realtime.hub.connections[cid].messages_received >= beats + 2
