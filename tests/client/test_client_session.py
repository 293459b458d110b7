"""The Python client's durable session against a real server: acks, the store, resume
after a restart (in process here; the SIGKILL test is tests/client/test_session_kill.py)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from football_realtime.client import Event, RealtimeClient
from football_realtime.client.session import ACK_INTERVAL, ACK_MAX_DELAY, SessionStore

from ..client_support import FAST as _FAST
from ..client_support import TcpProxy, apublish, score, take, until, valid_token
from ..support import TIMEOUT, RunningServer

FAST = {k: v for k, v in _FAST.items() if k != "token"}


def offsets(items: list[Any]) -> list[int]:
    return [i.offset for i in items if isinstance(i, Event) and i.offset is not None]


async def test_acks_store_and_resume_after_a_restart(server: RunningServer, tmp_path: Path) -> None:
    store = tmp_path / "s" / "session.json"
    tok = valid_token("ann")
    async with RealtimeClient(server.ws_url, token=tok, session_store=store, **FAST) as c:
        assert c.session["resumed"] is False
        sid = c.session["id"]
        await c.subscribe("matches", match_ids=[1])
        for i in range(5):
            await apublish(server, score(1, i))
        got = await take(c, 4)  # the 5th is delivered, not taken
        assert offsets(got) == [1, 2, 3, 4]
        # Taken means the loop came back: the 4th counts once the 5th is asked for.
        saved = orjson.loads(store.read_bytes())
        assert saved["session_id"] == sid and saved["positions"]["matches"]["offset"] == 3
        rt = server.realtime

        def acked() -> int:
            conns = [c for c in rt.durable.open_connections.values()]
            return conns[0].durable.state.positions["matches"][1] if conns else -1

        await until(lambda: server.call(acked) == 3, TIMEOUT + ACK_INTERVAL)
    # Closed by the application after taking the 4th: it counts.
    assert orjson.loads(store.read_bytes())["positions"]["matches"]["offset"] == 4
    for i in range(3):
        await apublish(server, score(1, 10 + i))  # while the process is "down"

    async with RealtimeClient(server.ws_url, token=tok, session_store=store, **FAST) as c2:
        assert c2.session["id"] == sid and c2.session["resumed"] is True
        assert [u["filters"] for u in c2.unclaimed_subscriptions] == [{"match_ids": [1]}]
        sub = await c2.subscribe("matches", match_ids=[1])  # adopted, no new subscription
        assert sub.server_id is not None and c2.unclaimed_subscriptions == []
        got = await take(c2, 4)
        assert offsets(got) == [5, 6, 7, 8]
        subs = server.call(
            lambda: [len(x.subscriptions) for x in server.realtime.hub.connections.values()]
        )
        assert subs == [1]
    assert SessionStore(store).load()[1]["matches"][1] == 8


async def test_a_lost_session_falls_back_to_the_stored_positions(
    server: RunningServer, tmp_path: Path
) -> None:
    store = tmp_path / "session.json"
    tok = valid_token("bo")
    async with RealtimeClient(server.ws_url, token=tok, session_store=store, **FAST) as c:
        await c.subscribe("matches")
        await apublish(server, score(1))
        await apublish(server, score(2))
        await take(c, 2)
    await apublish(server, score(3))
    # The service forgot the session (expired): the client recovers with `since`.
    data = orjson.loads(store.read_bytes())
    data["session_id"] = "x" * 32
    store.write_bytes(orjson.dumps(data))
    async with RealtimeClient(server.ws_url, token=tok, session_store=store, **FAST) as c2:
        assert c2.session["resumed"] is False
        await c2.subscribe("matches")
        assert offsets(await take(c2, 1)) == [3]


async def test_another_users_session_is_a_terminal_refusal(
    server: RunningServer, tmp_path: Path
) -> None:
    from football_realtime.client import TerminalCloseError

    store = tmp_path / "session.json"
    async with RealtimeClient(server.ws_url, token=valid_token("cy"), session_store=store, **FAST):
        pass
    with pytest.raises(TerminalCloseError) as exc:
        async with RealtimeClient(
            server.ws_url, token=valid_token("dee"), session_store=store, **FAST
        ):
            pass
    assert exc.value.code == 4503


async def test_a_busy_stream_is_acked_about_once_a_second_a_quiet_one_when_it_pauses(
    server: RunningServer,
) -> None:
    """Coalescing: while events keep coming (every 40 ms here, for 1.6 s) acks go at
    most ACK_MAX_DELAY apart, not every ACK_INTERVAL (that would be 6 or more); once
    the stream pauses the last taken event is acked ACK_INTERVAL later."""
    assert (ACK_INTERVAL, ACK_MAX_DELAY) == (0.25, 1.0)  # as documented (docs/protocol.md)
    rt = server.realtime

    def acks() -> int:
        return rt.stats.received_by_type["ack"]

    def acked() -> int:
        conns = list(rt.durable.open_connections.values())
        return conns[0].durable.state.positions["matches"][1] if conns else -1

    loop = asyncio.get_running_loop()
    async with RealtimeClient(
        server.ws_url, token=valid_token("ivy"), session_id="new", **FAST
    ) as c:
        await c.subscribe("matches")
        before = server.call(acks)
        taking = asyncio.create_task(take(c, 40))
        sent_at: list[float] = []
        for i in range(40):
            sent_at.append(loop.time())
            await apublish(server, score(1, i))
            await asyncio.sleep(0.04)
        got = await taking
        assert offsets(got) == list(range(1, 41))
        # Taken once the loop came back: the 40th is not, the 39th is.
        await until(lambda: server.call(acked) == 39, TIMEOUT + ACK_INTERVAL)
        sent = server.call(acks) - before
        # About one per second of the stream (the documented ACK_MAX_DELAY) and the one
        # after it paused; a stall of the machine long enough to look like a pause may
        # add one each. Every ACK_INTERVAL would be span / 0.25.
        span = sent_at[-1] - sent_at[0]
        stalls = sum(1 for a, b in itertools.pairwise(sent_at) if b - a >= 0.2)
        assert 1 <= sent <= 2 + int(span) + stalls, (sent, span, stalls)


async def test_a_label_session_id_is_not_a_durable_session(server: RunningServer) -> None:
    async with RealtimeClient(server.ws_url, session_id="my-label", **FAST) as c:
        assert c.session == {}
        assert c.connection_info["session_id"] == "my-label"
        await asyncio.sleep(0)


async def test_unacked_critical_events_are_sent_again_and_dropped_by_the_client(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import football_realtime.client.session as client_session

    # Nothing acked before the cut.
    monkeypatch.setattr(client_session, "ACK_INTERVAL", 60.0)
    monkeypatch.setattr(client_session, "ACK_MAX_DELAY", 60.0)
    async with (
        TcpProxy(server.port) as proxy,
        RealtimeClient(
            proxy.url(), token=valid_token("eli"), session_store=tmp_path / "s.json", **FAST
        ) as c,
    ):
        await c.subscribe("matches")
        await apublish(server, score(1, 1))
        await apublish(server, score(1, 2))
        await apublish(server, ended(1))
        got = await take(c, 3)
        replayed = server.call(lambda: server.realtime.stats.replayed_events)
        proxy.cut()  # the goals and the final whistle were sent, none acknowledged
        await until(lambda: c.session.get("resumed") is True and c.state.value == "open")
        await apublish(server, score(1, 3))
        got += await take(c, 1)
        assert offsets(got) == [1, 2, 3, 4]
        assert [i.event_type for i in got][2] == "match_ended"
        sent_again = server.call(lambda: server.realtime.stats.replayed_events) - replayed
        assert sent_again == 3  # on the wire again...
        assert c.stats.duplicates_dropped == 3  # ...and dropped by offset, not seen twice


def ended(match_id: int) -> dict[str, Any]:
    return {
        "event_type": "match_ended",
        "data": {"match_id": match_id, "home_score": 2, "away_score": 0, "league": "英超"},
    }


def test_the_store_is_written_atomically_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d" / "s.json"
    store = SessionStore(path)
    assert store.load() == (None, {})
    store.save("a" * 32, {"matches": ("e1", 7)})
    assert store.load() == ("a" * 32, {"matches": ("e1", 7)})
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temporary left
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        store.load()
    path.write_text('{"session_id": "short", "positions": {}}')
    with pytest.raises(ValueError, match="cannot be read"):
        store.load()


def test_listen_session_names_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from football_realtime.client.listen import session_path

    assert session_path("feed-1", str(tmp_path)) == tmp_path / "feed-1.json"
    monkeypatch.setenv("REALTIME_SESSION_DIR", str(tmp_path / "env"))
    assert session_path("x", None) == tmp_path / "env" / "x.json"
    monkeypatch.delenv("REALTIME_SESSION_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert (
        session_path("x", None) == tmp_path / "state" / "football-realtime" / "sessions" / "x.json"
    )
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError):
            session_path(bad, None)
