"""Event model: the 15 types, streams, payload validation and pass-through."""

from __future__ import annotations

import pytest

from football_realtime.core.events import (
    CONNECTION_EVENT_TYPES,
    EVENT_STREAM,
    PAYLOAD_MODELS,
    EventType,
    EventValidationError,
    RealtimeEvent,
    SubscriptionType,
    prepare_published_event,
)

from ..support import SEED_PREDICTION

SEED_EVENT_TYPES = {
    "connection_status",
    "prediction_created",
    "prediction_updated",
    "prediction_completed",
    "match_started",
    "match_score_changed",
    "match_status_changed",
    "match_ended",
    "odds_updated",
    "odds_significant_change",
    "system_alert",
    "system_status",
    "user_subscription_changed",
    "data_refresh",
    "analytics_updated",
}


def test_exactly_the_seed_event_types() -> None:
    assert {e.value for e in EventType} == SEED_EVENT_TYPES
    assert set(PAYLOAD_MODELS) == set(EventType)
    assert {s.value for s in SubscriptionType} == {
        "predictions",
        "matches",
        "odds",
        "system_alerts",
        "analytics",
    }


def test_stream_mapping() -> None:
    expect = {
        "predictions": {"prediction_created", "prediction_updated", "prediction_completed"},
        "matches": {"match_started", "match_score_changed", "match_status_changed", "match_ended"},
        "odds": {"odds_updated", "odds_significant_change"},
        "system_alerts": {"system_alert", "system_status", "data_refresh"},
        "analytics": {"analytics_updated"},
    }
    got: dict[str, set[str]] = {}
    for et, stream in EVENT_STREAM.items():
        got.setdefault(stream.value, set()).add(et.value)
    assert got == expect
    assert {e.value for e in CONNECTION_EVENT_TYPES} == {
        "connection_status",
        "user_subscription_changed",
    }


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("prediction_created", SEED_PREDICTION),
        (
            "match_started",
            {
                "match_id": 456,
                "home_team": "曼联",
                "away_team": "切尔西",
                "league": "英超",
                "start_time": "2025-10-29T20:00:00Z",
                "venue": "老特拉福德球场",
            },
        ),
        (
            "match_score_changed",
            {
                "match_id": 456,
                "home_score": 1,
                "away_score": 0,
                "scoring_team": "home",
                "scoring_player": "布鲁诺·费尔南德斯",
                "minute": 25,
                "timestamp": "2025-10-29T20:25:00Z",
            },
        ),
        (
            "system_alert",
            {
                "alert_type": "error",
                "message": "数据库连接异常",
                "severity": "high",
                "component": "database",
                "details": {"error_code": "DB_CONN_FAILED", "retry_count": 3},
            },
        ),
        (
            "odds_updated",
            {
                "match_id": 1,
                "league": "西甲",
                "bookmaker": "bet365",
                "home_odds": 2.1,
                "draw_odds": 3.3,
                "away_odds": 3.6,
                "change": {"home": -0.1, "draw": 0.0, "away": 0.2},
            },
        ),
        ("analytics_updated", {"accuracy": 0.61, "brier_score": 0.19, "total_predictions": 40}),
    ],
)
def test_seed_examples_validate(event_type: str, data: dict) -> None:
    ev = prepare_published_event({"event_type": event_type, "data": data})
    assert ev.data == data
    wire = ev.to_wire()
    assert wire["timestamp"].endswith("Z")
    assert "source" not in wire and "stream" not in wire


def test_unknown_fields_pass_through_unchanged() -> None:
    data = {**SEED_PREDICTION, "model_version": "v7", "features": {"xg": [1.2, 0.4]}}
    ev = prepare_published_event({"event_type": "prediction_created", "data": data})
    assert ev.to_wire()["data"] == data


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**SEED_PREDICTION, "match_id": "456"}, "data.match_id"),
        ({**SEED_PREDICTION, "confidence": 1.5}, "data.confidence"),
        ({**SEED_PREDICTION, "prediction": "win"}, "data.prediction"),
        ({k: v for k, v in SEED_PREDICTION.items() if k != "home_win_prob"}, "data.home_win_prob"),
        ({**SEED_PREDICTION, "confidence": float("nan")}, "data.confidence"),
    ],
)
def test_invalid_payload_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(EventValidationError) as info:
        prepare_published_event({"event_type": "prediction_created", "data": data})
    assert field in str(info.value)
    assert any(e["field"] == field for e in info.value.errors)


@pytest.mark.parametrize("event_type", ["connection_status", "user_subscription_changed"])
def test_server_only_types_cannot_be_published(event_type: str) -> None:
    with pytest.raises(EventValidationError, match="server"):
        prepare_published_event({"event_type": event_type, "data": {}})


def test_envelope_refuses_unknown_event_type_and_bad_timestamp() -> None:
    with pytest.raises(EventValidationError, match="event_type"):
        prepare_published_event({"event_type": "goal", "data": {}})
    with pytest.raises(EventValidationError, match="timestamp"):
        prepare_published_event(
            {"event_type": "system_status", "data": {"status": "healthy"}, "timestamp": "yesterday"}
        )
    ev = RealtimeEvent(event_type=EventType.SYSTEM_STATUS, data={"status": "healthy"}, source="ops")
    assert ev.to_wire()["source"] == "ops"
