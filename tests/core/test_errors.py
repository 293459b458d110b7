"""One root for the server's exceptions: local (the request is at fault) vs remote (retry)."""

from __future__ import annotations

import pytest

from football_realtime.auth import AuthError
from football_realtime.brokers.base import BrokerUnavailable
from football_realtime.core.close_codes import CloseCode
from football_realtime.core.errors import LocalError, RealtimeError, RemoteError
from football_realtime.core.events import EventType, EventValidationError
from football_realtime.core.permissions import Forbidden
from football_realtime.core.protocol import ProtocolError
from football_realtime.edges.body_limit import _TooLarge
from football_realtime.edges.websocket import QueryError
from football_realtime.service.admission import Refused

LOCAL: list[BaseException] = [
    ProtocolError("invalid_message", "m"),
    EventValidationError("m", []),
    Forbidden("free", [EventType.ODDS_UPDATED]),
    AuthError("expired"),
    Refused(CloseCode.UNAUTHORIZED, "r", "unauthorized"),
    QueryError("q"),
    _TooLarge(),
]


@pytest.mark.parametrize("exc", LOCAL, ids=lambda e: type(e).__name__)
def test_local_errors(exc: BaseException) -> None:
    assert isinstance(exc, LocalError) and isinstance(exc, RealtimeError)
    assert not isinstance(exc, RemoteError)


def test_remote_errors_and_builtin_bases_kept() -> None:
    exc = BrokerUnavailable("redis down")
    assert isinstance(exc, RemoteError) and isinstance(exc, RealtimeError)
    assert isinstance(exc, RuntimeError) and str(exc) == "redis down"
    assert not isinstance(exc, LocalError)
    # Existing ``except ValueError`` clauses keep catching these two.
    assert isinstance(QueryError("q"), ValueError)
    assert isinstance(EventValidationError("m", []), ValueError)
    # Names, attributes and messages are unchanged.
    err = ProtocolError("not_found", "no such room", 3, "leave")
    assert (err.code, err.message, err.msg_id, err.msg_type, str(err)) == (
        "not_found",
        "no such room",
        3,
        "leave",
        "no such room",
    )
