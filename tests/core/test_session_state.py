"""The pure rules of a durable session's state and its stored form."""

from __future__ import annotations

import pytest

from football_realtime.core.events import SubscriptionType
from football_realtime.core.session_state import (
    InvalidState,
    SessionState,
    SubscriptionSpec,
    new_session_id,
    valid_session_id,
)

M = SubscriptionType.MATCHES


def test_issued_ids_are_long_random_and_valid() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and valid_session_id(i) for i in ids)
    assert not valid_session_id("new") and not valid_session_id("a" * 21)
    assert not valid_session_id("a" * 65) and not valid_session_id("a" * 21 + "!")


def test_positions_move_forward_within_an_epoch_and_reset_with_a_new_one() -> None:
    st = SessionState("x" * 22, None)
    st.start_stream(M, "e1", 10)
    st.start_stream(M, "e1", 20)  # a second subscription does not move it
    assert st.positions[M] == ("e1", 10)
    assert st.acknowledge(M, "e1", 15)
    assert not st.acknowledge(M, "e1", 12)
    assert st.positions[M] == ("e1", 15)
    assert st.acknowledge(M, "e2", 3)
    assert st.positions[M] == ("e2", 3)
    st.start_stream(M, "e3", 0)
    assert st.positions[M] == ("e3", 0)
    st.streams_in_use(set())
    assert st.positions == {}


def test_the_stored_form_round_trips() -> None:
    st = SessionState("s" * 22, "alice")
    st.subscriptions["sub_4"] = SubscriptionSpec("matches", {"match_ids": [1, 2]})
    st.subscriptions["sub_9"] = SubscriptionSpec(None, {"event_types": ["match_ended"]})
    st.positions[M] = ("e", 42)
    back = SessionState.decode(st.id, st.encode())
    assert back.owner == "alice" and back.positions == st.positions
    assert list(back.subscriptions.values()) == list(st.subscriptions.values())
    assert st.size_with(SubscriptionSpec("odds", {})) > len(st.encode())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'{"v": 2}',
        b'{"v": 1, "o": 3}',
        b'{"v": 1, "p": {"matches": ["e", -1]}}',
        b'{"v": 1, "p": {"nope": ["e", 1]}}',
        b'{"v": 1, "s": [{"t": 1}]}',
    ],
)
def test_unreadable_state_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidState):
        SessionState.decode("s" * 22, raw)


def test_session_ids_are_redacted_from_logs_like_tokens() -> None:
    from football_realtime.logredact import redact

    line = redact(f"GET /realtime/ws?session_id={'a' * 32}&resume=1&user_id=u")
    assert line == "GET /realtime/ws?session_id=[REDACTED]&resume=1&user_id=u"
