"""Where a subscription positions a connection on a stream: the replay after a new
epoch (issue 15, item 2) and no live event at or below that position (item 3)."""

from __future__ import annotations

from football_realtime.core.events import SubscriptionType
from football_realtime.service.realtime import RealtimeService

from ..support import SEED_PREDICTION, token
from .test_realtime_service import open_connection, request

PRED = SubscriptionType.PREDICTIONS


async def publish(svc: RealtimeService, n: int) -> None:
    for i in range(n):
        await svc.publish(
            {"event_type": "prediction_created", "data": {**SEED_PREDICTION, "match_id": i}}
        )


def offsets(sink: object) -> list[int]:
    return [m["offset"] for m in sink.messages() if "offset" in m]  # type: ignore[attr-defined]


async def test_a_new_epoch_is_replayed_from_its_start_with_recovered_false(
    service: RealtimeService,
) -> None:
    await publish(service, 3)
    conn, sink = open_connection(service, "c1", token("u1"))
    since = {"predictions": {"epoch": "an-old-epoch", "offset": 40}}
    ack = await request(
        service,
        conn,
        sink,
        {
            "type": "subscribe",
            "id": 1,
            "data": {"subscription_type": "predictions", "since": since},
        },
    )
    result = ack["data"]["result"]
    assert result["recovered"] is False
    assert "epoch changed" in result["reason"] and "replayed from offset 1" in result["reason"]
    pos = result["streams"]["predictions"]
    assert pos["offset"] == 3 and pos["recovered"] is False and pos["replay_after"] == 0
    assert offsets(sink) == [1, 2, 3]
    await publish(service, 1)
    assert offsets(sink) == [1, 2, 3, 4]
    assert service.stats.recoveries_failed == 1 and service.stats.replayed_events == 3


async def test_a_same_epoch_recovery_says_recovered_per_stream(service: RealtimeService) -> None:
    await publish(service, 3)
    epoch, _ = await service.broker.position(PRED)
    conn, sink = open_connection(service, "c1", token("u1"))
    since = {"predictions": {"epoch": epoch, "offset": 1}}
    ack = await request(
        service,
        conn,
        sink,
        {
            "type": "subscribe",
            "id": 1,
            "data": {"subscription_type": "predictions", "since": since},
        },
    )
    result = ack["data"]["result"]
    assert result["recovered"] is True and "reason" not in result
    assert result["streams"]["predictions"] == {
        "epoch": epoch,
        "offset": 3,
        "recovered": True,
        "replay_after": 1,
    }
    assert offsets(sink) == [2, 3]


async def test_live_delivery_skips_events_at_or_below_the_subscription_position(
    service: RealtimeService,
) -> None:
    await publish(service, 3)
    history = await service.broker.history(PRED, 0)
    assert history is not None and len(history) == 3
    conn, sink = open_connection(service, "c1", token("u1"))
    ack = await request(
        service,
        conn,
        sink,
        {"type": "subscribe", "id": 1, "data": {"subscription_type": "predictions"}},
    )
    assert ack["data"]["result"]["streams"]["predictions"]["offset"] == 3
    # A reader catching up (e.g. on a new epoch) hands the hub offsets from before the
    # subscription: none reaches the connection.
    for ev in history:
        service.on_event(ev)
    assert offsets(sink) == []
    await publish(service, 1)
    assert offsets(sink) == [4]
    # Another subscription on the stream does not move the position the first one holds.
    other = await request(
        service,
        conn,
        sink,
        {"type": "subscribe", "id": 2, "data": {"subscription_type": "predictions"}},
    )
    assert other["event_type"] == "message_ack"
    assert conn.floors[PRED] == 3


async def test_replay_positions_the_connection_after_the_replay(service: RealtimeService) -> None:
    await publish(service, 3)
    epoch, _ = await service.broker.position(PRED)
    history = await service.broker.history(PRED, 0)
    assert history is not None
    conn, sink = open_connection(service, "c1", token("u1"))
    since = {"predictions": {"epoch": epoch, "offset": 0}}
    await request(
        service,
        conn,
        sink,
        {
            "type": "subscribe",
            "id": 1,
            "data": {"subscription_type": "predictions", "since": since},
        },
    )
    assert offsets(sink) == [1, 2, 3]
    for ev in history:
        service.on_event(ev)  # late duplicates from a lagging reader
    assert offsets(sink) == [1, 2, 3]
