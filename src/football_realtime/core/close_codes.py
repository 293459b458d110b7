"""WebSocket close codes used by the service, in one table shared with the clients.

The ranges tell a client what to do:

* RFC 6455 codes where their meaning fits (1000-1015).
* 4000-4499: the server asks the client to reconnect, with backoff, and to recover
  what it missed (``since``).
* 4500-4999: terminal. Retrying unchanged will fail again; the user or the
  application must act (new token, other parameters, fewer connections).

`docs/protocol.md` renders this table; the Python and TypeScript clients decide
whether to reconnect with :func:`should_reconnect` (or its TypeScript twin,
checked against this module in the test run).
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    # RFC 6455
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    ABNORMAL = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013

    # 4000-4499: reconnect with backoff and recover
    RECONNECT = 4000
    SLOW_CONSUMER = 4001
    INSUFFICIENT_STATE = 4002
    HEARTBEAT_TIMEOUT = 4003

    # 4500-4999: terminal, do not retry unchanged
    BAD_REQUEST = 4500
    UNAUTHORIZED = 4501
    TOKEN_EXPIRED = 4502
    FORBIDDEN = 4503
    CONNECTION_LIMIT = 4504
    AUTH_TIMEOUT = 4505
    DISCONNECTED_BY_ADMIN = 4506


#: One line per code: (meaning, what the client should do). Rendered into docs/protocol.md.
CLOSE_CODE_DOCS: dict[CloseCode, tuple[str, str]] = {
    CloseCode.NORMAL: ("Normal closure.", "Do not reconnect."),
    CloseCode.GOING_AWAY: ("The server or the client is going away.", "Reconnect with backoff."),
    CloseCode.PROTOCOL_ERROR: ("WebSocket protocol violation.", "Fix the client; do not retry."),
    CloseCode.UNSUPPORTED_DATA: (
        "Binary frame received; the protocol is JSON text frames only.",
        "Fix the client; do not retry.",
    ),
    CloseCode.ABNORMAL: ("Connection dropped without a close frame.", "Reconnect with backoff."),
    CloseCode.INVALID_PAYLOAD: ("Text frame that is not valid UTF-8.", "Fix the client."),
    CloseCode.POLICY_VIOLATION: (
        "Policy violation, e.g. continued flooding after `rate_limited` errors.",
        "Do not reconnect automatically; fix what the client does.",
    ),
    CloseCode.MESSAGE_TOO_BIG: ("Client message over the size limit.", "Fix the client."),
    CloseCode.INTERNAL_ERROR: ("Unexpected server error.", "Reconnect with backoff."),
    CloseCode.SERVICE_RESTART: (
        "The instance is restarting or draining (graceful shutdown).",
        "Reconnect at once (another instance answers) and recover with `since`.",
    ),
    CloseCode.TRY_AGAIN_LATER: (
        "The instance is at its connection capacity.",
        "Reconnect with backoff.",
    ),
    CloseCode.RECONNECT: ("The server asks the client to reconnect.", "Reconnect with backoff."),
    CloseCode.SLOW_CONSUMER: (
        "The client read too slowly; its outbound buffer overflowed.",
        "Reconnect with backoff and recover the gap with `since`.",
    ),
    CloseCode.INSUFFICIENT_STATE: (
        "The instance lost events for this connection (broker gap).",
        "Reconnect and recover with `since`.",
    ),
    CloseCode.HEARTBEAT_TIMEOUT: (
        "Nothing was received from the client within the heartbeat timeout.",
        "Reconnect with backoff.",
    ),
    CloseCode.BAD_REQUEST: (
        "Invalid connection parameters (query string).",
        "Fix the parameters; do not retry unchanged.",
    ),
    CloseCode.UNAUTHORIZED: (
        "Missing or invalid credentials (bad signature, missing claim, user mismatch).",
        "Obtain a valid token; do not retry unchanged.",
    ),
    CloseCode.TOKEN_EXPIRED: (
        "The token expired and was not refreshed.",
        "Refresh the token, then reconnect.",
    ),
    CloseCode.FORBIDDEN: ("The credentials do not allow this.", "Do not retry unchanged."),
    CloseCode.CONNECTION_LIMIT: (
        "Too many connections for this user or address.",
        "Close other connections first; do not retry unchanged.",
    ),
    CloseCode.AUTH_TIMEOUT: (
        "No `auth` message arrived within the deadline.",
        "Send `auth` promptly after connecting.",
    ),
    CloseCode.DISCONNECTED_BY_ADMIN: (
        "An administrator disconnected this user on every instance, or the user is banned "
        "(`POST /realtime/users/{user_id}/disconnect`; then an `error` `banned` first).",
        "Do not reconnect automatically; a ban ends after its `ban_seconds`.",
    ),
}

_RECONNECT_RFC = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.ABNORMAL,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        1005,  # no status received: the peer vanished
        1014,  # bad gateway (proxies)
    }
)


def should_reconnect(code: int) -> bool:
    """Whether a client that saw ``code`` should reconnect (with backoff)."""
    if 4000 <= code <= 4499:
        return True
    if 4500 <= code <= 4999:
        return False
    return code in _RECONNECT_RFC


def is_terminal(code: int) -> bool:
    """Application codes in 4500-4999: the client must change something before retrying."""
    return 4500 <= code <= 4999
