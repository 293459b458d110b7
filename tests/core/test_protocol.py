"""Client message parsing (pure, no sockets)."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from football_realtime.core import protocol as proto
from football_realtime.core.close_codes import CloseCode, is_terminal, should_reconnect
from football_realtime.core.events import SubscriptionType


def parse_error(text: str) -> proto.ProtocolError:
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse_client_message(text)
    return info.value


def test_subscribe_seed_message() -> None:
    msg = proto.parse_client_message(
        '{"type":"subscribe","data":{"subscription_type":"predictions",'
        '"filters":{"match_ids":[1,2,3],"leagues":["英超","西甲"],"min_confidence":0.7}}}'
    )
    assert isinstance(msg, proto.Subscribe)
    assert msg.subscription_type is SubscriptionType.PREDICTIONS
    assert msg.filters.match_ids == [1, 2, 3]
    assert msg.filters.leagues == ["英超", "西甲"]
    assert msg.filters.min_confidence == 0.7
    assert msg.id is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "invalid_json"),
        ('{"type": "subscribe"', "invalid_json"),
        ('{"type":"heartbeat","x":NaN}', "invalid_json"),
        ('{"type":"heartbeat","x":Infinity}', "invalid_json"),
        ('{"type":"heartbeat","x":' + "1" * 5000 + "}", "invalid_json"),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"match_ids":['
            + "1" * 40
            + "]}}}",
            "invalid_filter",
        ),
        ('{"type":"heartbeat","x":"\\ud800"}', "invalid_json"),
        ("[" * 5000 + "]" * 5000, "invalid_json"),
        ("[1,2]", "invalid_message"),
        ('"subscribe"', "invalid_message"),
        ('{"data":{}}', "invalid_message"),
        ('{"type":5}', "invalid_message"),
        ('{"type":["subscribe"]}', "invalid_message"),
        ('{"type":"subscribe","id":{"a":1}}', "invalid_message"),
        ('{"type":"subscribe","data":[]}', "invalid_message"),
        ('{"type":"publish"}', "unknown_type"),
        ('{"type":"subscribe","data":{"subscription_type":"goals"}}', "unknown_subscription_type"),
        ('{"type":"subscribe","data":{"subscription_type":7}}', "invalid_message"),
        ('{"type":"subscribe","data":{}}', "invalid_message"),
        ('{"type":"subscribe","data":{"subscription_type":"odds","extra":1}}', "invalid_message"),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"match_ids":[]}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"leagues":[]}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"match_ids":["1"]}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"match_ids":[true]}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"min_confidence":1.5}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"min_confidence":"high"}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"match_id":[1]}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"event_types":["goal"]}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":{"event_types":["connection_status"]}}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","filters":[1]}}',
            "invalid_filter",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","snapshot":"yes"}}',
            "invalid_message",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","since":{"odds":{"epoch":"e"}}}}',
            "invalid_since",
        ),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds","since":{"goals":{"epoch":"e","offset":1}}}}',
            "invalid_since",
        ),
        ('{"type":"unsubscribe","data":{}}', "invalid_message"),
        ('{"type":"unsubscribe","data":{"subscription_id":5}}', "invalid_message"),
        ('{"type":"join","data":{"room":"a b"}}', "invalid_message"),
        ('{"type":"join","data":{}}', "invalid_message"),
        # A final newline once slipped through the room pattern's `$` (fuzzer finding).
        ('{"type":"join","id":1,"data":{"room":"match:1\\n"}}', "invalid_message"),
        ('{"type":"leave","id":1,"data":{"room":"match:1\\n"}}', "invalid_message"),
        ('{"type":"join","data":{"room":"' + "r" * 129 + '"}}', "invalid_message"),
        ('{"type":"heartbeat","id":9007199254740993}', "invalid_message"),
        ('{"type":"heartbeat","id":1.0}', "invalid_message"),
        (
            '{"type":"subscribe","data":{"subscription_type":"odds",'
            '"since":{"odds":{"epoch":"e","offset":1,"extra":1}}}}',
            "invalid_since",
        ),
        (
            '{"type":"unsubscribe","data":{"subscription_id":null,"subscription_type":null}}',
            "invalid_message",
        ),
    ],
)
def test_bad_messages_get_specific_codes(text: str, code: str) -> None:
    err = parse_error(text)
    assert err.code == code, err.message
    assert err.code in proto.ERROR_CODES
    assert err.message


def test_room_names_are_matched_whole() -> None:
    """The room must match in full: nothing after it, not even the final newline that
    Python's ``$`` lets through."""
    for room in ("match:1\n", "\nmatch:1", "match:1\r", "match:1\n\n"):
        for t in ("join", "leave"):
            err = parse_error(orjson.dumps({"type": t, "id": 1, "data": {"room": room}}).decode())
            assert (err.code, err.msg_id, err.msg_type) == ("invalid_message", 1, t)
            assert "data.room must be 1-128 characters" in err.message
    ok = proto.parse_client_message('{"type":"join","id":1,"data":{"room":"match:1"}}')
    assert isinstance(ok, proto.Join) and ok.room == "match:1"
    assert proto.parse_client_message('{"type":"leave","data":{"room":"' + "r" * 128 + '"}}')


def test_unknown_top_level_fields_are_ignored() -> None:
    """The envelope is open (docs/protocol.md); unknown fields inside ``data`` are not."""
    msg = proto.parse_client_message('{"type":"heartbeat","id":3,"v":2,"trace":{"a":1}}')
    assert isinstance(msg, proto.Heartbeat) and msg.id == 3


def test_error_names_the_field_and_echoes_id() -> None:
    err = parse_error(
        '{"type":"subscribe","id":"abc","data":{"subscription_type":"odds","filters":{"min_confidence":2}}}'
    )
    assert err.msg_id == "abc"
    assert err.msg_type == "subscribe"
    assert "filters.min_confidence" in err.message
    reply = orjson.loads(proto.error_reply(err))
    assert reply["event_type"] == "error"
    assert reply["data"] == {
        "id": "abc",
        "type": "subscribe",
        "code": "invalid_filter",
        "message": err.message,
    }
    assert reply["timestamp"].endswith("Z")


def test_event_types_only_subscription() -> None:
    msg = proto.parse_client_message(
        '{"type":"subscribe","id":7,"data":{"filters":{"event_types":["prediction_created","match_started"]}}}'
    )
    assert isinstance(msg, proto.Subscribe)
    assert msg.subscription_type is None
    assert msg.id == 7


@given(st.text(max_size=200))
def test_parser_never_raises_anything_else_on_text(text: str) -> None:
    try:
        proto.parse_client_message(text)
    except proto.ProtocolError as exc:
        assert exc.code in proto.ERROR_CODES


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.sampled_from([*proto.MESSAGE_TYPES, "x"]),
    st.dictionaries(
        st.sampled_from(
            ["subscription_type", "filters", "since", "snapshot", "subscription_id", "room", "zz"]
        ),
        json_values,
        max_size=4,
    ),
)
def test_parser_fuzz_structured(msg_type: str, data: dict) -> None:
    text = json.dumps({"type": msg_type, "id": 1, "data": data}, ensure_ascii=False)
    try:
        proto.parse_client_message(text)
    except proto.ProtocolError as exc:
        assert exc.code in proto.ERROR_CODES


def test_close_code_ranges() -> None:
    assert should_reconnect(CloseCode.SLOW_CONSUMER)
    assert should_reconnect(CloseCode.SERVICE_RESTART)
    assert should_reconnect(CloseCode.ABNORMAL)
    assert should_reconnect(4499)
    assert not should_reconnect(CloseCode.NORMAL)
    assert not should_reconnect(CloseCode.UNAUTHORIZED)
    assert not should_reconnect(CloseCode.MESSAGE_TOO_BIG)
    assert not should_reconnect(4999)
    for code in CloseCode:
        if 4000 <= code <= 4499:
            assert should_reconnect(code) and not is_terminal(code)
        if 4500 <= code <= 4999:
            assert is_terminal(code) and not should_reconnect(code)
