"""Durable sessions and acks in the service, without sockets (fake time for expiry)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from football_realtime.brokers.memory import MemoryBroker
from football_realtime.core.close_codes import CloseCode
from football_realtime.service.connection import Connection
from football_realtime.service.durable_sessions import SessionRefused, SessionRequest
from football_realtime.service.realtime import RealtimeService

from ..support import make_settings, token
from .memory_sink import MemorySink
from .test_realtime_service import open_connection, request

TTL = 900.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def svc(clock: FakeClock) -> AsyncIterator[RealtimeService]:
    settings = make_settings(session_ttl=TTL, max_sessions_per_user=2, session_max_subscriptions=3)
    broker = MemoryBroker(history_size=100, history_ttl=600.0, clock=clock)
    service = RealtimeService(settings, broker=broker)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def open_session(
    svc: RealtimeService,
    conn_id: str,
    session_id: str = "new",
    *,
    tok: str | None = None,
    resume: bool = False,
) -> tuple[Connection, MemorySink, dict[str, Any]]:
    """What the endpoint does: admit, open the session, welcome, restore."""
    conn, sink = open_connection(svc, conn_id, tok)
    request_ = SessionRequest.of(session_id, resume)
    assert request_ is not None
    identity = conn.session.identity
    info = await svc.durable.open(conn, request_, identity.user_id if identity else None)
    if info["resumed"]:
        await svc.durable.restore(conn)
    return conn, sink, info


async def close(svc: RealtimeService, conn: Connection) -> None:
    svc.sessions.close(conn)
    svc.hub.remove(conn, 1006)
    await svc.durable.close(conn)


def score(match_id: int, home: int) -> dict[str, Any]:
    return {
        "event_type": "match_score_changed",
        "data": {"match_id": match_id, "home_score": home, "away_score": 0},
    }


def offsets(sink: MemorySink, event_type: str = "match_score_changed") -> list[int]:
    return [m["offset"] for m in sink.messages() if m.get("event_type") == event_type]


async def send(svc: RealtimeService, conn: Connection, msg: Any) -> None:
    await svc.requests.handle(conn, orjson.dumps(msg).decode())


def ack_msg(epoch: str, offset: int, stream: str = "matches") -> dict[str, Any]:
    return {"type": "ack", "data": {"positions": {stream: {"epoch": epoch, "offset": offset}}}}


async def subscribe_matches(
    svc: RealtimeService, conn: Connection, sink: MemorySink, **filters: Any
) -> dict[str, Any]:
    reply = await request(
        svc,
        conn,
        sink,
        {
            "type": "subscribe",
            "id": 1,
            "data": {"subscription_type": "matches", "filters": filters},
        },
    )
    assert reply["event_type"] == "message_ack", reply
    result: dict[str, Any] = reply["data"]["result"]
    return result


async def test_resume_replays_after_the_acked_offset_then_live(svc: RealtimeService) -> None:
    tok = token("alice", tier="premium")
    conn, sink, info = await open_session(svc, "c1", tok=tok)
    assert info["resumed"] is False and info["expires_in"] == TTL
    sid = info["id"]
    assert len(sid) == 32
    result = await subscribe_matches(svc, conn, sink, match_ids=[1])
    epoch = result["streams"]["matches"]["epoch"]
    for i in range(1, 6):
        await svc.publish(score(1 if i != 3 else 2, i))  # offset 3 is another match
    assert offsets(sink) == [1, 2, 4, 5]
    before = len(sink.frames)
    await send(svc, conn, ack_msg(epoch, 2))
    assert len(sink.frames) == before, "a valid ack gets no reply"
    await close(svc, conn)
    await svc.publish(score(1, 6))  # while away

    _, sink2, info2 = await open_session(svc, "c2", sid, tok=tok, resume=True)
    assert info2 == {"id": sid, "resumed": True, "expires_in": TTL}
    (changed,) = [m for m in sink2.messages() if m["event_type"] == "user_subscription_changed"]
    data = changed["data"]
    assert data["restored"] is True and data["recovered"] is True
    assert data["action"] == "subscribed"
    assert data["subscription"]["filters"] == {"match_ids": [1]}
    assert data["streams"]["matches"] == {
        "epoch": epoch,
        "offset": 6,
        "recovered": True,
        "replay_after": 2,
    }
    assert offsets(sink2) == [4, 5, 6]
    await svc.publish(score(1, 7))
    await svc.publish(score(2, 8))
    assert offsets(sink2) == [4, 5, 6, 7]
    assert svc.stats.sessions_resumed == 1 and svc.stats.sessions_created == 1


async def test_no_ack_resumes_from_where_the_subscription_started(svc: RealtimeService) -> None:
    tok = token("alice", tier="premium")
    conn, sink, info = await open_session(svc, "c1", tok=tok)
    await svc.publish(score(1, 0))  # before the subscription: never sent
    await subscribe_matches(svc, conn, sink)
    await svc.publish(score(1, 1))
    await close(svc, conn)
    _, sink2, _ = await open_session(svc, "c2", info["id"], tok=tok, resume=True)
    assert offsets(sink2) == [2]


async def test_session_expires_ttl_after_its_last_connection(
    svc: RealtimeService, clock: FakeClock
) -> None:
    conn, sink, info = await open_session(svc, "c1")
    await subscribe_matches(svc, conn, sink)
    await close(svc, conn)
    clock.now += TTL - 1
    conn2, _, info2 = await open_session(svc, "c2", info["id"], resume=True)
    assert info2["resumed"] is True
    await close(svc, conn2)
    clock.now += TTL + 1
    _, sink3, info3 = await open_session(svc, "c3", info["id"], resume=True)
    assert info3["resumed"] is False and info3["id"] == info["id"]
    assert "expired" in info3["reason"]
    assert not [m for m in sink3.messages() if m["event_type"] == "user_subscription_changed"]
    assert svc.stats.sessions_expired == 1


async def test_a_session_is_bound_to_its_user(svc: RealtimeService) -> None:
    conn, _, info = await open_session(svc, "c1", tok=token("alice"))
    await close(svc, conn)
    with pytest.raises(SessionRefused) as other:
        await open_session(svc, "c2", info["id"], tok=token("bob"), resume=True)
    assert other.value.code == CloseCode.FORBIDDEN
    assert "another identity" in other.value.reason
    with pytest.raises(SessionRefused) as anonymous:
        await open_session(svc, "c3", info["id"], resume=True)
    assert anonymous.value.code == CloseCode.UNAUTHORIZED
    assert "token" in anonymous.value.reason
    # An anonymous session cannot be taken over with a token either.
    conn4, _, anon = await open_session(svc, "c4")
    await close(svc, conn4)
    with pytest.raises(SessionRefused):
        await open_session(svc, "c5", anon["id"], tok=token("alice"), resume=True)
    assert svc.stats.sessions_refused == {"owner": 2, "token": 1}


async def test_sessions_per_user_are_bounded(svc: RealtimeService) -> None:
    tok = token("alice")
    await open_session(svc, "c1", tok=tok)
    _, _, second = await open_session(svc, "c2", tok=tok)
    with pytest.raises(SessionRefused) as exc:
        await open_session(svc, "c3", tok=tok)
    assert (
        exc.value.code == CloseCode.FORBIDDEN
        and "REALTIME_MAX_SESSIONS_PER_USER" in exc.value.reason
    )
    # Resuming one of them is fine.
    await open_session(svc, "c4", second["id"], tok=tok, resume=True)


async def test_subscriptions_per_session_are_bounded(svc: RealtimeService) -> None:
    conn, sink, _ = await open_session(svc, "c1")
    for league in ("a", "b", "c"):
        await subscribe_matches(svc, conn, sink, leagues=[league])
    reply = await request(
        svc, conn, sink, {"type": "subscribe", "id": 9, "data": {"subscription_type": "odds"}}
    )
    assert reply["data"]["code"] == "limit_exceeded"
    assert "REALTIME_SESSION_MAX_SUBSCRIPTIONS" in reply["data"]["message"]


async def test_bytes_per_session_are_bounded(clock: FakeClock) -> None:
    settings = make_settings(session_max_bytes=600)
    service = RealtimeService(settings)
    await service.start()
    try:
        conn, sink, _ = await open_session(service, "c1")
        reply = await request(
            service,
            conn,
            sink,
            {
                "type": "subscribe",
                "id": 1,
                "data": {
                    "subscription_type": "matches",
                    "filters": {"match_ids": list(range(300))},
                },
            },
        )
        assert reply["data"]["code"] == "limit_exceeded"
        assert "REALTIME_SESSION_MAX_BYTES" in reply["data"]["message"]
        assert not conn.subscriptions
    finally:
        await service.stop()


async def test_invalid_acks_are_refused(svc: RealtimeService) -> None:
    conn, sink, _ = await open_session(svc, "c1")
    result = await subscribe_matches(svc, conn, sink)
    epoch = result["streams"]["matches"]["epoch"]
    await svc.publish(score(1, 1))

    async def refused(msg: Any) -> str:
        reply = await request(svc, conn, sink, msg)
        assert reply["event_type"] == "error" and reply["data"]["code"] == "invalid_ack", reply
        assert reply["data"]["type"] == "ack"
        message: str = reply["data"]["message"]
        return message

    assert "no subscription" in await refused(ack_msg(epoch, 1, "odds"))
    assert "ahead of what was sent" in await refused(ack_msg(epoch, 2))
    assert "not the stream's current epoch" in await refused(ack_msg("other", 1))
    assert "unknown stream" in await refused(ack_msg(epoch, 1, "nope"))
    assert "non-empty" in await refused({"type": "ack", "data": {"positions": {}}})
    assert "positions.matches must be" in await refused(
        {"type": "ack", "data": {"positions": {"matches": {"epoch": epoch, "offset": -1}}}}
    )
    assert conn.durable.state.positions[next(iter(conn.durable.state.positions))][1] == 0


async def test_ack_latency_is_recorded_per_event_type(
    svc: RealtimeService, clock: FakeClock
) -> None:
    conn, sink, _ = await open_session(svc, "c1", tok=token("u", tier="premium"))
    result = await subscribe_matches(svc, conn, sink)
    epoch = result["streams"]["matches"]["epoch"]
    await svc.publish(score(1, 1))
    await send(svc, conn, ack_msg(epoch, 1))
    h = svc.stats.ack_latency["match_score_changed"]
    assert h.count == 1
    await send(svc, conn, ack_msg(epoch, 1))  # not newer: not timed again
    assert h.count == 1
    snap = svc.stats_snapshot()
    assert snap["sessions_active"] == 1 and snap["session_unacked_offsets"] == 0
    assert snap["ack_latency_ms_by_event_type"]["match_score_changed"]["count"] == 1


async def test_unsubscribe_is_remembered(svc: RealtimeService) -> None:
    conn, sink, info = await open_session(svc, "c1")
    await subscribe_matches(svc, conn, sink)
    await request(
        svc, conn, sink, {"type": "unsubscribe", "id": 2, "data": {"subscription_type": "matches"}}
    )
    await close(svc, conn)
    _, sink2, info2 = await open_session(svc, "c2", info["id"], resume=True)
    assert info2["resumed"] is True
    assert not [m for m in sink2.messages() if m["event_type"] == "user_subscription_changed"]
