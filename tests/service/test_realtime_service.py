"""The whole service without a socket or a web framework: requests in, frames out.

A connection on an in-memory sink is admitted and opened as the WebSocket endpoint
does, then driven with client messages through the request handler, while events are
published through the in-process broker.
"""

from __future__ import annotations

from typing import Any

import orjson

from football_realtime.core.close_codes import CloseCode
from football_realtime.core.events import SubscriptionType
from football_realtime.service.connection import Connection
from football_realtime.service.realtime import RealtimeService

from ..support import SEED_PREDICTION, token
from .memory_sink import MemorySink, connection
from .test_admission import FakeHandshake


def open_connection(
    svc: RealtimeService, conn_id: str, tok: str | None = None
) -> tuple[Connection, MemorySink]:
    hs = FakeHandshake(query={"token": tok} if tok else {})
    ip, identity, tier, pending = svc.admission.admit(hs, None)
    conn, sink = connection(conn_id, user_id=identity.user_id if identity else None)
    svc.sessions.open(conn, ip, identity, tier, pending)
    svc.hub.add(conn)
    return conn, sink


async def request(svc: RealtimeService, conn: Connection, sink: MemorySink, msg: Any) -> Any:
    before = len(sink.frames)
    await svc.requests.handle(conn, orjson.dumps(msg).decode())
    replies = [m for m in sink.messages()[before:] if m["event_type"] in ("message_ack", "error")]
    assert len(replies) == 1, "every request gets exactly one reply"
    return replies[0]


async def test_subscribe_publish_receive_in_order(service: RealtimeService) -> None:
    conn, sink = open_connection(service, "c1", token("u1"))
    ack = await request(
        service,
        conn,
        sink,
        {"type": "subscribe", "id": 1, "data": {"subscription_type": "predictions"}},
    )
    assert ack["event_type"] == "message_ack" and ack["data"]["id"] == 1
    assert ack["data"]["result"]["streams"]["predictions"]["offset"] == 0
    for i in range(3):
        await service.publish(
            {"event_type": "prediction_created", "data": {**SEED_PREDICTION, "match_id": i}}
        )
    events = [m for m in sink.messages() if m["event_type"] == "prediction_created"]
    assert [e["offset"] for e in events] == [1, 2, 3]
    assert [e["data"]["match_id"] for e in events] == [0, 1, 2]


async def test_free_tier_is_narrowed_and_fields_are_hidden(service: RealtimeService) -> None:
    conn, sink = open_connection(service, "c1")  # anonymous: the free tier
    ack = await request(
        service,
        conn,
        sink,
        {"type": "subscribe", "id": "a", "data": {"subscription_type": "predictions"}},
    )
    assert ack["data"]["result"]["event_types"] == ["prediction_created"]
    await service.publish(
        {"event_type": "prediction_created", "data": {**SEED_PREDICTION, "strategy": "x"}}
    )
    (ev,) = [m for m in sink.messages() if m["event_type"] == "prediction_created"]
    assert "strategy" not in ev["data"]
    err = await request(
        service,
        conn,
        sink,
        {"type": "subscribe", "id": "b", "data": {"filters": {"event_types": ["odds_updated"]}}},
    )
    assert err["event_type"] == "error" and err["data"]["code"] == "forbidden"


async def test_recovery_replays_what_was_missed(service: RealtimeService) -> None:
    for i in range(5):
        await service.publish(
            {"event_type": "prediction_created", "data": {**SEED_PREDICTION, "match_id": i}}
        )
    epoch, _ = await service.broker.position(SubscriptionType.PREDICTIONS)
    conn, sink = open_connection(service, "c1", token("u1"))
    ack = await request(
        service,
        conn,
        sink,
        {
            "type": "subscribe",
            "id": 1,
            "data": {
                "subscription_type": "predictions",
                "since": {"predictions": {"epoch": epoch, "offset": 2}},
            },
        },
    )
    assert ack["data"]["result"]["recovered"] is True
    replayed = [m["offset"] for m in sink.messages() if m["event_type"] == "prediction_created"]
    assert replayed == [3, 4, 5]


async def test_bad_requests_get_errors_and_the_connection_goes_on(
    service: RealtimeService,
) -> None:
    conn, sink = open_connection(service, "c1", token("u1"))
    for text, code in [
        ("{not json", "invalid_json"),
        ('{"type": "dance"}', "unknown_type"),
        (
            '{"type": "subscribe", "data": {"subscription_type": "weather"}}',
            "unknown_subscription_type",
        ),
    ]:
        before = len(sink.frames)
        await service.requests.handle(conn, text)
        (reply,) = sink.messages()[before:]
        assert reply["event_type"] == "error"
        assert reply["data"]["code"] == code
    hb = await request(service, conn, sink, {"type": "heartbeat", "id": 9})
    assert hb["data"]["result"]["server_time"]


async def test_shutdown_says_goodbye_with_1012(service: RealtimeService) -> None:
    conn, sink = open_connection(service, "c1", token("u1"))
    service.close_for_shutdown(conn)
    assert sink.messages()[-1]["data"]["status"] == "closing"
    assert sink.closed is not None and sink.closed[0] == CloseCode.SERVICE_RESTART
