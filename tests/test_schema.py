"""The exported JSON Schema: deterministic, valid, complete, and true to what the server sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from football_realtime.cli import main
from football_realtime.core.close_codes import CloseCode, should_reconnect
from football_realtime.core.events import PAYLOAD_MODELS, EventType
from football_realtime.core.protocol import (
    ERROR_CODES,
    MESSAGE_TYPES,
    ProtocolError,
    parse_client_message,
)
from football_realtime.schema import CLIENT_MESSAGES, build_schema, schema_json

from .support import SEED_PREDICTION, RunningServer, WSClient, barrier, post_broadcast

SCHEMA = build_schema()

#: One valid payload per publishable event type.
SAMPLES: dict[str, dict[str, Any]] = {
    "prediction_created": SEED_PREDICTION,
    "prediction_updated": {
        "prediction_id": "p-9",
        "match_id": 456,
        "prediction": "draw",
        "confidence": 0.5,
        "home_win_prob": 0.3,
        "draw_prob": 0.5,
        "away_win_prob": 0.2,
        "minute": 60,
        "home_score": 1,
        "away_score": 1,
    },
    "prediction_completed": {
        "prediction_id": 123,
        "match_id": 456,
        "prediction": "home_win",
        "actual_result": "home_win",
        "is_correct": True,
        "home_score": 2,
        "away_score": 0,
    },
    "match_started": {
        "match_id": 456,
        "home_team": "曼联",
        "away_team": "切尔西",
        "league": "英超",
        "start_time": "2025-10-29T20:00:00Z",
        "venue": "老特拉福德球场",
    },
    "match_score_changed": {
        "match_id": 456,
        "home_score": 1,
        "away_score": 0,
        "scoring_team": "home",
        "scoring_player": "布鲁诺·费尔南德斯",
        "minute": 25,
        "timestamp": "2025-10-29T20:25:00Z",
    },
    "match_status_changed": {"match_id": 456, "status": "half_time", "minute": 45},
    "match_ended": {"match_id": 456, "home_score": 2, "away_score": 0, "result": "home_win"},
    "odds_updated": {
        "match_id": 456,
        "bookmaker": "bet365",
        "home_odds": 1.8,
        "draw_odds": 3.5,
        "away_odds": 4.2,
        "change": {"home": -0.1, "draw": 0.0, "away": 0.2},
    },
    "odds_significant_change": {
        "match_id": 456,
        "bookmaker": "bet365",
        "outcome": "home",
        "old_odds": 2.0,
        "new_odds": 1.6,
        "change_pct": -20.0,
    },
    "system_alert": {
        "alert_type": "error",
        "message": "数据库连接异常",
        "severity": "high",
        "component": "database",
        "details": {"error_code": "DB_CONN_FAILED", "retry_count": 3},
    },
    "system_status": {"status": "healthy"},
    "data_refresh": {"data_type": "predictions", "match_ids": [456]},
    "analytics_updated": {"period": "24h", "accuracy": 0.61, "total_predictions": 120},
}


def validator(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]}
    )


def assert_valid(definition: str, instance: Any) -> None:
    errors = list(validator(definition).iter_errors(instance))
    assert not errors, f"{definition}: {[e.message for e in errors][:3]} in {instance}"


def test_output_is_deterministic_and_written_by_cli(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["schema"]) == 0
    printed = capsysbinary.readouterr().out
    out = tmp_path / "schema.json"
    assert main(["schema", "--out", str(out)]) == 0
    assert out.read_bytes() == printed == schema_json()
    # sorted keys: re-serialising with sort_keys changes nothing
    assert json.dumps(json.loads(printed), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == (
        printed.decode()
    )


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_event_type_has_a_payload_and_an_envelope() -> None:
    defs = SCHEMA["$defs"]
    payload_map = defs["EventPayloadMap"]
    assert sorted(payload_map["required"]) == sorted(et.value for et in EventType)
    assert len(payload_map["required"]) == 15
    for et, model in PAYLOAD_MODELS.items():
        assert payload_map["properties"][et.value] == {"$ref": f"#/$defs/{model.__name__}"}
        assert defs[f"{model.__name__}Event"]["properties"]["event_type"]["const"] == et.value


def test_client_message_table_matches_the_parser() -> None:
    """A message type added to the protocol without a schema entry fails here."""
    assert set(CLIENT_MESSAGES) == set(MESSAGE_TYPES)
    assert SCHEMA["$defs"]["ClientMessageType"]["enum"] == list(CLIENT_MESSAGES)
    assert SCHEMA["$defs"]["ErrorCode"]["enum"] == list(ERROR_CODES)


VALID_MESSAGES: list[dict[str, Any]] = [
    {"type": "subscribe", "data": {"subscription_type": "predictions"}},
    {
        "type": "subscribe",
        "id": 7,
        "data": {
            "filters": {
                "match_ids": [1, 2, 3],
                "min_confidence": 0.7,
                "event_types": ["prediction_created"],
            }
        },
    },
    {
        "type": "subscribe",
        "id": "s1",
        "data": {
            "subscription_type": "matches",
            "filters": {"leagues": ["英超", "西甲"]},
            "since": {"matches": {"epoch": "abc", "offset": 12}},
        },
    },
    {"type": "unsubscribe", "data": {"subscription_id": "sub_1"}},
    {"type": "unsubscribe", "data": {"subscription_type": "odds"}},
    {"type": "heartbeat"},
    {"type": "get_stats", "id": "x"},
    {"type": "join", "data": {"room": "match:456"}},
    {"type": "leave", "data": {"room": "match:456"}},
]

INVALID_MESSAGES: list[dict[str, Any]] = [
    {"type": "subscribe", "data": {"subscription_type": "predictions", "filter": {}}},
    {"type": "subscribe", "data": {"subscription_type": "nope"}},
    {"type": "subscribe", "data": {"filters": {"match_ids": []}, "subscription_type": "odds"}},
    {"type": "subscribe", "data": {"subscription_type": "odds", "since": {"odds": {"offset": 1}}}},
    {"type": "join", "data": {"room": "bad room"}},
    {"type": "teleport"},
    {"type": "heartbeat", "id": [1]},
]


@pytest.mark.parametrize("msg", VALID_MESSAGES)
def test_schema_valid_messages_are_accepted_by_the_server_parser(msg: dict[str, Any]) -> None:
    assert_valid("ClientMessage", msg)
    parsed = parse_client_message(orjson.dumps(msg).decode())
    assert parsed.type == msg["type"]


@pytest.mark.parametrize("msg", INVALID_MESSAGES)
def test_schema_invalid_messages_are_refused_by_both(msg: dict[str, Any]) -> None:
    assert list(validator("ClientMessage").iter_errors(msg))
    with pytest.raises(ProtocolError):
        parse_client_message(orjson.dumps(msg).decode())


def test_close_code_ranges_reproduce_should_reconnect() -> None:
    table = SCHEMA["x-close-codes"]

    def in_ranges(code: int, ranges: list[list[int]]) -> bool:
        return any(lo <= code <= hi for lo, hi in ranges)

    for code in range(0, 6000):
        assert in_ranges(code, table["reconnect_ranges"]) == should_reconnect(code), code
    assert table["terminal_ranges"] == [[4500, 4999]]
    assert {c["code"] for c in table["codes"]} == {int(c) for c in CloseCode}
    assert SCHEMA["$defs"]["CloseCode"]["enum"] == [int(c) for c in CloseCode]


async def test_what_the_server_sends_validates(server: RunningServer) -> None:
    """Every kind of server frame, captured from a real server, matches ServerMessage."""
    seen: list[dict[str, Any]] = []
    async with await WSClient.connect(server.ws_url + "?user_id=u1") as ws:
        seen.append(await ws.recv())  # connection_status
        assert seen[0]["event_type"] == "connection_status"
        everything = [et for et in SAMPLES]
        sub = await ws.request("subscribe", {"filters": {"event_types": everything}})
        seen.append(sub)
        assert sub["event_type"] == "message_ack"
        again = await ws.request(
            "subscribe",
            {
                "subscription_type": "odds",
                "since": {"odds": {"epoch": "old", "offset": 3}},
            },
        )
        seen.append(again)
        for msg in (
            ("heartbeat", None),
            ("get_stats", None),
            ("join", {"room": "r1"}),
            ("leave", {"room": "r1"}),
            ("unsubscribe", {"subscription_type": "odds"}),
            ("subscribe", {"subscription_type": "nope"}),
            ("leave", {"room": "never"}),
        ):
            seen.append(await ws.request(*msg))
        for et, data in SAMPLES.items():
            r = post_broadcast(server, {"event_type": et, "data": data, "source": "test"})
            assert r.status_code == 200, r.text
        r = post_broadcast(
            server,
            {
                "event_type": "prediction_created",
                "data": SAMPLES["prediction_created"],
                "target": {"user_id": "u1"},
            },
        )
        assert r.status_code == 200, r.text
        await barrier(ws)
        seen.extend(ws.inbox)
        # get_stats after events were delivered (its per-type counters were once unserialisable)
        stats = await ws.request("get_stats")
        assert stats["event_type"] == "message_ack", stats
        assert (
            stats["data"]["result"]["server"]["delivered_by_event_type"]["prediction_created"] == 1
        )
        seen.append(stats)
    kinds = {m["event_type"] for m in seen}
    assert (
        set(SAMPLES)
        | {
            "connection_status",
            "message_ack",
            "error",
            "user_subscription_changed",
        }
        <= kinds
    )
    for m in seen:
        assert_valid("ServerMessage", m)
    # the per-type ack schemas are the ones that matched
    for m in seen:
        if m["event_type"] == "message_ack":
            assert_valid(
                f"{''.join(p.capitalize() for p in m['data']['type'].split('_'))}Ack", m["data"]
            )
