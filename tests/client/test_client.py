"""The Python client against a real server: typed events, filters, requests, handlers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from football_realtime.client import (
    ClientState,
    Event,
    FeedDisabled,
    InvalidFilterError,
    RealtimeClient,
    RequestError,
)
from football_realtime.client.feed import Feed
from football_realtime.core.events import (
    MatchScoreChanged,
    MatchStarted,
    Payload,
    PredictionCreated,
)

from ..client_support import FAST, apublish, drain, pred, score, take, until, valid_token
from ..support import TIMEOUT, RunningServer


async def test_subscribe_and_receive_typed_events(any_server: RunningServer) -> None:
    srv = any_server
    async with RealtimeClient(
        srv.ws_url, **{**FAST, "user_id": "user123", "token": valid_token("user123")}
    ) as client:
        assert client.state is ClientState.OPEN
        assert client.connection_info["user_id"] == "user123"
        sub = await client.subscribe("predictions", match_ids=[1, 2, 3], min_confidence=0.7)
        assert sub.server_id is not None and sub.server_id.startswith("sub_")
        assert sub.streams == ("predictions",)
        assert set(sub.event_types) == {
            "prediction_created",
            "prediction_updated",
            "prediction_completed",
        }
        assert "predictions" in client.positions

        await apublish(srv, pred(match_id=1, confidence=0.5))  # below min_confidence
        await apublish(srv, pred(match_id=9))  # other match
        await apublish(srv, pred(prediction_id=7, match_id=2, model_version="v9"))
        (event,) = await take(client, 1)
        assert event.event_type == "prediction_created"
        assert isinstance(event.data, PredictionCreated)
        typed = event.as_(PredictionCreated)
        assert typed.data.prediction_id == 7
        assert typed.data.match_id == 2
        assert typed.data.confidence == 0.8
        # Unknown fields are kept, as attributes and in the raw envelope.
        assert getattr(event.data, "model_version", None) == "v9"
        assert event.raw["data"]["model_version"] == "v9"
        assert (event.stream, event.offset) == ("predictions", 3)
        assert event.timestamp is not None and event.timestamp.endswith("Z")
        assert not event.snapshot
        with pytest.raises(TypeError):
            event.as_(MatchStarted)
        # The subscription's own feed got it as well.
        (same,) = await take(sub, 1)
        assert same.offset == 3
        assert client.positions["predictions"]["offset"] == 3


async def test_filters_route_events_to_their_subscriptions(server: RunningServer) -> None:
    async with RealtimeClient(server.ws_url, **FAST) as client:
        english = await client.subscribe("matches", leagues=["英超"])
        m2 = await client.subscribe("matches", match_ids=[2], event_types=["match_score_changed"])
        cross = await client.subscribe(event_types=["prediction_created", "match_started"])
        assert cross.subscription_type is None
        assert set(cross.streams) == {"predictions", "matches"}

        events = [
            score(1, league="英超"),  # english
            score(2, league="西甲"),  # m2
            score(2, league="英超"),  # english and m2: delivered once
            score(3, league="德甲"),  # nobody
            {
                "event_type": "match_started",
                "data": {"match_id": 5, "home_team": "A", "away_team": "B", "league": "意甲"},
            },  # cross
            pred(match_id=4),  # cross
            {
                "event_type": "match_status_changed",
                "data": {"match_id": 2, "league": "西甲", "status": "half_time"},
            },  # nobody: m2 takes only scores
        ]
        for ev in events:
            await apublish(server, ev)
        got = await take(client, 5)
        assert [(e.event_type, e.raw["data"]["match_id"]) for e in got] == [
            ("match_score_changed", 1),
            ("match_score_changed", 2),
            ("match_score_changed", 2),
            ("match_started", 5),
            ("prediction_created", 4),
        ]
        assert [e.offset for e in got[:3]] == [1, 2, 3]
        assert isinstance(got[0].data, MatchScoreChanged)
        assert [e.offset for e in await take(english, 2)] == [1, 3]
        assert [e.offset for e in await take(m2, 2)] == [2, 3]
        assert [e.event_type for e in await take(cross, 2)] == [
            "match_started",
            "prediction_created",
        ]
        # Nothing else is pending: the next event after a marker is the marker.
        await apublish(server, score(1, home=9))
        (marker,) = await take(client, 1)
        assert marker.raw["data"]["home_score"] == 9


async def test_error_replies_raise_typed_exceptions(server: RunningServer) -> None:
    async with RealtimeClient(server.ws_url, **FAST) as client:
        with pytest.raises(InvalidFilterError) as ei:
            await client.subscribe("nonsense")
        assert ei.value.code == "unknown_subscription_type"
        assert ei.value.request_type == "subscribe"
        with pytest.raises(InvalidFilterError) as ei:
            await client.subscribe("predictions", min_confidence=1.5)
        assert ei.value.code == "invalid_filter"
        assert "min_confidence" in ei.value.message
        with pytest.raises(RequestError) as er:
            await client.request("no_such_request")
        assert er.value.code == "unknown_type"
        with pytest.raises(ValueError):
            await client.subscribe()
        # Refused subscriptions are not kept; the connection is still usable.
        assert client.subscriptions == []
        result = await client.heartbeat()
        assert result["server_time"].endswith("Z")
        stats = await client.get_stats()
        assert stats["connection"]["connection_id"] == client.connection_info["connection_id"]
        sub = await client.subscribe("odds")
        assert client.subscriptions == [sub]


async def test_handlers_sync_async_and_removal(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen_sync: list[int] = []
    seen_async: list[int] = []
    seen_any: list[str] = []

    async with RealtimeClient(server.ws_url, max_queue=0, **FAST) as client:

        def on_sync(ev: Event[Any]) -> None:
            seen_sync.append(ev.offset or 0)

        async def on_async(ev: Event[Any]) -> None:
            await asyncio.sleep(0)
            # A handler may make requests: replies are read while it waits.
            await client.heartbeat()
            seen_async.append(ev.offset or 0)

        def broken(ev: Event[Any]) -> None:
            raise RuntimeError("handler bug")

        remove = client.on("match_score_changed", on_sync)
        client.on("match_score_changed", broken)
        client.on("match_score_changed", on_async)
        client.on("*", lambda ev: seen_any.append(ev.event_type))
        await client.subscribe("matches")
        with caplog.at_level(logging.ERROR, "football_realtime.client"):
            for i in range(3):
                await apublish(server, score(1, home=i))
            await until(lambda: len(seen_async) == 3)
        assert seen_sync == [1, 2, 3]
        assert seen_async == [1, 2, 3]
        assert "handler bug" in caplog.text
        remove()
        await apublish(server, score(1, home=5))
        await until(lambda: len(seen_async) == 4)
        assert seen_sync == [1, 2, 3]
        assert seen_any.count("match_score_changed") == 4
        with pytest.raises(RuntimeError):
            client.__aiter__()  # max_queue=0: handlers only


async def test_unsubscribe_ends_the_subscription_iterator(server: RunningServer) -> None:
    async with RealtimeClient(server.ws_url, **FAST) as client:
        keep = await client.subscribe("matches", match_ids=[1])
        drop = await client.subscribe("matches", match_ids=[2])
        assert len(server.realtime.hub.index) == 2
        await drop.unsubscribe()
        assert len(server.realtime.hub.index) == 1
        assert client.subscriptions == [keep]
        assert await drain(drop) == []
        await apublish(server, score(2))
        await apublish(server, score(1))
        (ev,) = await take(client, 1)
        assert ev.raw["data"]["match_id"] == 1


async def test_snapshot_reaches_only_the_subscription_that_asked(server: RunningServer) -> None:
    for home in range(3):
        await apublish(server, score(1, home=home))  # offsets 1..3
    async with RealtimeClient(server.ws_url, **FAST) as client:
        live = await client.subscribe("matches", match_ids=[2])
        await apublish(server, score(2, home=7))  # offset 4, seen by `live`
        assert [e.offset for e in await take(live, 1)] == [4]
        snap = await client.subscribe("matches", match_ids=[1], snapshot=True)
        (state,) = await take(snap, 1)
        # The latest event of match 1, though older than what the client has seen.
        assert state.snapshot and state.offset == 3
        assert state.raw["data"]["home_score"] == 2
        await apublish(server, score(1, home=8))
        (new,) = await take(snap, 1)
        assert (new.offset, new.snapshot) == (5, False)
        await apublish(server, score(2, home=9))
        # `live` never saw match 1's snapshot or events.
        assert [e.offset for e in await take(live, 1)] == [6]
        got = await take(client, 4)
        assert [(e.offset, e.snapshot) for e in got] == [
            (4, False),
            (3, True),
            (5, False),
            (6, False),
        ]


async def test_feed_never_read_is_switched_off_and_read_feed_waits() -> None:
    idle: Feed[int] = Feed(2, "idle")
    for i in range(5):
        await idle.put(i)  # never blocks
    assert idle.disabled
    with pytest.raises(FeedDisabled):
        await idle.get()

    busy: Feed[int] = Feed(2, "busy")
    reader = busy.__aiter__()
    await busy.put(1)
    await busy.put(2)
    blocked = asyncio.create_task(busy.put(3))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # backpressure, not loss
    assert await reader.__anext__() == 1
    await asyncio.wait_for(blocked, TIMEOUT)
    busy.end()
    assert await drain(reader) == [2, 3]


async def test_handler_only_app_with_small_queue_does_not_stall(server: RunningServer) -> None:
    got: list[int] = []
    async with RealtimeClient(server.ws_url, max_queue=2, **FAST) as client:
        client.on("match_score_changed", lambda ev: got.append(ev.offset))
        await client.subscribe("matches")
        for i in range(10):
            await apublish(server, score(1, home=i))
        await until(lambda: len(got) == 10)
        assert got == list(range(1, 11))


async def test_unknown_event_fields_and_types_do_not_break_the_client(
    server: RunningServer,
) -> None:
    async with RealtimeClient(server.ws_url, **FAST) as client:
        await client.subscribe("system_alerts")
        await apublish(
            server,
            {
                "event_type": "system_alert",
                "data": {
                    "alert_type": "warning",
                    "message": "数据库连接异常",
                    "severity": "high",
                    "component": "database",
                    "details": {"error_code": "DB_CONN_FAILED"},
                },
            },
        )
        (ev,) = await take(client, 1)
        assert ev.data.severity == "high"
        # A frame from a newer server with an event type this client does not know.
        conn_id = client.connection_info["connection_id"]
        server.call(
            lambda: server.realtime.hub.send_payload(
                server.realtime.hub.connections[conn_id],
                b'{"event_type":"goal_celebration","data":{"x":1}}',
            )
        )
        (odd,) = await take(client, 1, pred=lambda it: it.event_type == "goal_celebration")
        assert type(odd.data) is Payload
        assert odd.raw["data"] == {"x": 1}
