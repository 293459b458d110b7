"""Client-to-server messages: parsing and replies. No I/O.

A client sends JSON text frames ``{"type": ..., "id": <optional>, "data": {...}}``.
:func:`parse_client_message` turns one frame into a typed request or raises
:class:`ProtocolError`, whose ``code`` is one of :data:`ERROR_CODES`. Every request
gets exactly one reply: :func:`ack` or :func:`error_reply`, echoing ``id``.

What a valid message is comes from ``core/messages.py`` (the single definition the
published JSON Schema is built from too): the message types, each type's ``data``
fields, and every bound and pattern, as rules whose ``check`` this parser runs. The
parser adds only the order of the checks and the error codes and messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson
from pydantic import ValidationError

from .encoding import server_message
from .errors import LocalError
from .events import SubscriptionType
from .messages import (
    AUTH_SESSION_FIELDS,
    CLIENT_MESSAGE_DEFS,
    EPOCH,
    MESSAGE_ID_INT,
    MESSAGE_ID_TEXT,
    OFFSET,
    ROOM,
    SESSION_REQUEST,
    SUBSCRIBE_NEEDS,
    SUBSCRIPTION_ID,
    TOKEN,
    UNSUBSCRIBE_NEEDS,
    StreamPosition,
)
from .subscriptions import SubscriptionFilter

#: Every error code a client may receive, with its meaning (rendered in docs/protocol.md).
ERROR_CODES: Final[dict[str, str]] = {
    "invalid_json": "The frame is not valid JSON (syntax, NaN/Infinity, lone surrogates, "
    "nesting deeper than 1024, integers beyond 64 bits).",
    "invalid_message": "Valid JSON but not a valid message: not an object, `type`/`id`/`data` "
    "of the wrong type, or a required field missing.",
    "unknown_type": "`type` is not a message type this server knows.",
    "unknown_subscription_type": "`subscription_type` is not one of the five streams.",
    "invalid_filter": "A filter field is unknown, of the wrong type, out of range, or an empty "
    "list.",
    "not_found": "The subscription (or room) named does not exist on this connection.",
    "limit_exceeded": "A limit would be exceeded: subscriptions or rooms per connection, or "
    "connections per user or client address (then the connection closes with 4504).",
    "invalid_since": "`since` names a stream the subscription does not cover or is malformed.",
    "forbidden": "The connection's tier may not receive the requested event type(s); the "
    "message names them.",
    "rate_limited": "Too many messages; slow down (continued flooding closes with 1008).",
    "unauthorized": "The token is invalid (the message names why: expired, bad signature, "
    "missing claim, another user), or a message other than `auth` came before authentication.",
    "internal_error": "The server failed to handle the request; it was logged.",
    "unavailable": "The broker (Redis) is unreachable right now; nothing changed, retry the "
    "request after a short backoff.",
    "banned": "An administrator banned this user for a while (`POST "
    "/realtime/users/{user_id}/disconnect`); the connection closes with 4506. Do not retry "
    "before the ban ends (the message says how long).",
    "invalid_ack": "An `ack` the server cannot take: malformed, a stream none of the "
    "connection's subscriptions covers, an epoch other than the stream's current one (the "
    "positions of the old epoch are void: take the new epoch from the subscribe result or "
    "`user_subscription_changed`), or an offset ahead of what was sent on the stream. "
    "Nothing of that ack was recorded.",
    "session_refused": "The durable session cannot be opened or resumed: it belongs to "
    "another user (close 4503), it belongs to a user and the connection has no token "
    "(4501), the user holds too many sessions (4503), or the session parameters are "
    "invalid (4500). The message says which; do not retry unchanged.",
}

MESSAGE_TYPES: Final = tuple(CLIENT_MESSAGE_DEFS)
#: The ``data`` fields each message type allows (from the message definitions).
_FIELDS: Final = {name: d.fields for name, d in CLIENT_MESSAGE_DEFS.items()}

_MAX_ID_LEN = MESSAGE_ID_TEXT.max_length
MAX_TOKEN_LEN: Final = TOKEN.max_length
_id_int = MESSAGE_ID_INT.check
_id_text = MESSAGE_ID_TEXT.check
_epoch = EPOCH.check
_offset = OFFSET.check
_room = ROOM.check


class ProtocolError(LocalError):
    """The peer's fault: answer with an ``error`` reply and keep the connection."""

    def __init__(
        self, code: str, message: str, msg_id: Any = None, msg_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id
        self.msg_type = msg_type


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: Any
    subscription_type: SubscriptionType | None
    filters: SubscriptionFilter
    since: dict[SubscriptionType, StreamPosition] | None = None
    snapshot: bool = False
    type: str = "subscribe"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: Any
    subscription_id: str | None
    subscription_type: SubscriptionType | None
    type: str = "unsubscribe"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    id: Any
    type: str = "heartbeat"


@dataclass(frozen=True, slots=True)
class GetStats:
    id: Any
    type: str = "get_stats"


@dataclass(frozen=True, slots=True)
class Join:
    id: Any
    room: str
    type: str = "join"


@dataclass(frozen=True, slots=True)
class Leave:
    id: Any
    room: str
    type: str = "leave"


@dataclass(frozen=True, slots=True)
class Auth:
    """Authenticate a connection after connecting, or refresh its token; the first one
    may open a durable session (``session_id``, ``resume``)."""

    id: Any
    token: str = field(repr=False)
    session_id: str | None = None
    resume: bool = False
    type: str = "auth"


class Ack(NamedTuple):
    """Cumulative acknowledgement of processed events, per stream: ``positions`` maps
    each stream to ``(epoch, offset)``, the form a session keeps them in. A named tuple,
    not a frozen dataclass like the others: an ack is most of what clients send, and a
    tuple is built in a fraction of the time."""

    id: Any
    positions: dict[SubscriptionType, tuple[str, int]]
    type: str = "ack"


ClientMessage = Auth | Subscribe | Unsubscribe | Heartbeat | GetStats | Join | Leave | Ack


def _check_id(raw: Any) -> Any:
    if raw is None:
        return None
    if _id_int(raw) or _id_text(raw):
        return raw
    raise ProtocolError(
        "invalid_message", f"id must be a string of at most {_MAX_ID_LEN} characters or an integer"
    )


def _subscription_type(raw: Any, msg_id: Any, msg_type: str) -> SubscriptionType | None:
    if raw is None:
        return None
    if type(raw) is not str:
        raise ProtocolError(
            "invalid_message", "data.subscription_type must be a string", msg_id, msg_type
        )
    try:
        return SubscriptionType(raw)
    except ValueError:
        valid = ", ".join(t.value for t in SubscriptionType)
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ProtocolError(
            "unknown_subscription_type",
            f"unknown subscription_type {shown!r}; expected one of {valid}",
            msg_id,
            msg_type,
        ) from None


#: Shared by every unfiltered subscription (the model is frozen): one less object each.
_NO_FILTER = SubscriptionFilter()


def parse_filters(raw: Any, msg_id: Any = None, msg_type: str | None = None) -> SubscriptionFilter:
    if raw is None or raw == {}:
        return _NO_FILTER
    if type(raw) is not dict:
        raise ProtocolError("invalid_filter", "data.filters must be an object", msg_id, msg_type)
    try:
        return SubscriptionFilter.model_validate(raw)
    except ValidationError as exc:
        parts = []
        for e in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in e["loc"])
            parts.append(f"filters.{loc}: {e['msg']}")
        raise ProtocolError("invalid_filter", "; ".join(parts), msg_id, msg_type) from None


def _parse_since(raw: Any, msg_id: Any) -> dict[SubscriptionType, StreamPosition] | None:
    if raw is None:
        return None
    return _stream_positions(raw, msg_id, "since", "invalid_since", "subscribe")


def _parse_positions(raw: Any, msg_id: Any) -> dict[SubscriptionType, tuple[str, int]]:
    parsed = _stream_positions(raw, msg_id, "positions", "invalid_ack", "ack")
    return {st: (pos.epoch, pos.offset) for st, pos in parsed.items()}


#: Each stream by its name (a dict lookup, not an enum call: every ack names one).
_STREAMS: dict[str, SubscriptionType] = {st.value: st for st in SubscriptionType}


def _stream_positions(
    raw: Any, msg_id: Any, field: str, code: str, msg_type: str
) -> dict[SubscriptionType, StreamPosition]:
    """``{"<stream>": {"epoch": ..., "offset": ...}, ...}``: a subscribe's ``since`` and an
    ack's ``positions`` share the shape; errors name the field and carry ``code``."""
    if type(raw) is not dict or not raw:
        raise ProtocolError(code, f"data.{field} must be a non-empty object", msg_id, msg_type)
    out: dict[SubscriptionType, StreamPosition] = {}
    for stream, pos in raw.items():
        st = _STREAMS.get(stream)
        if st is None:
            raise ProtocolError(code, f"{field}: unknown stream {stream[:40]!r}", msg_id, msg_type)
        if (
            type(pos) is not dict
            or len(pos) != 2
            or not _epoch(pos.get("epoch"))
            or not _offset(pos.get("offset"))
        ):
            raise ProtocolError(
                code,
                f"{field}.{st.value} must be {{'epoch': <string>, 'offset': <integer >= 0>}}",
                msg_id,
                msg_type,
            )
        out[st] = StreamPosition(pos["epoch"], pos["offset"])
    return out


def _known_keys(data: dict[str, Any], allowed: tuple[str, ...], msg_id: Any, t: str) -> None:
    for k in data:  # a plain loop: this runs for every message
        if k not in allowed:
            break
    else:
        return
    extra = [k for k in data if k not in allowed]
    shown = ", ".join(repr(k[:40]) for k in extra[:5])
    raise ProtocolError(
        "invalid_message",
        f"unknown field(s) in data: {shown}; allowed: {', '.join(allowed)}",
        msg_id,
        t,
    )


def parse_ack(text: str) -> Ack | None:
    """``text`` as an :class:`Ack` when it is a valid ``ack``, else None. The same rules
    as :func:`parse_client_message` checks, in one pass with no error text built (the
    read callback runs it on every message a client sends: acks are most of them);
    anything it does not take goes through :func:`parse_client_message`, which names
    what is wrong."""
    if '"ack"' not in text:
        return None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or obj.get("type") != "ack":
        return None
    data = obj.get("data")
    if type(data) is not dict or len(data) != 1:
        return None
    raw = data.get("positions")
    if type(raw) is not dict or not raw:
        return None
    msg_id = obj.get("id")
    if msg_id is not None and not (_id_int(msg_id) or _id_text(msg_id)):
        return None
    positions: dict[SubscriptionType, tuple[str, int]] = {}
    for stream, pos in raw.items():
        st = _STREAMS.get(stream)
        if st is None or type(pos) is not dict or len(pos) != 2:
            return None
        epoch = pos.get("epoch")
        offset = pos.get("offset")
        if not _epoch(epoch) or not _offset(offset):
            return None
        positions[st] = (epoch, offset)
    return Ack(msg_id, positions)


def parse_client_message(text: str) -> ClientMessage:
    """Parse one text frame. Raises :class:`ProtocolError` for anything invalid."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"frame is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise ProtocolError("invalid_message", "a message must be a JSON object")
    msg_id = _check_id(obj.get("id"))
    t = obj.get("type")
    if type(t) is not str:
        raise ProtocolError("invalid_message", "type must be a string", msg_id)
    if t not in MESSAGE_TYPES:
        shown = t if len(t) <= 40 else t[:40] + "..."
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {shown!r}; expected one of {', '.join(MESSAGE_TYPES)}",
            msg_id,
        )
    data = obj.get("data")
    if data is None:
        data = {}
    elif type(data) is not dict:
        raise ProtocolError("invalid_message", "data must be an object", msg_id, t)

    if t == "subscribe":
        _known_keys(data, _FIELDS[t], msg_id, t)
        st = _subscription_type(data.get("subscription_type"), msg_id, t)
        flt = parse_filters(data.get("filters"), msg_id, t)
        if not SUBSCRIBE_NEEDS.check({"subscription_type": st, "filters": flt}):
            raise ProtocolError(
                "invalid_message",
                "data.subscription_type is required unless filters.event_types is given",
                msg_id,
                t,
            )
        snapshot = data.get("snapshot", False)
        if type(snapshot) is not bool:
            raise ProtocolError("invalid_message", "data.snapshot must be a boolean", msg_id, t)
        return Subscribe(msg_id, st, flt, _parse_since(data.get("since"), msg_id), snapshot)
    if t == "unsubscribe":
        _known_keys(data, _FIELDS[t], msg_id, t)
        sid = data.get("subscription_id")
        if sid is not None and not SUBSCRIPTION_ID.check(sid):
            raise ProtocolError(
                "invalid_message", "data.subscription_id must be a string", msg_id, t
            )
        st = _subscription_type(data.get("subscription_type"), msg_id, t)
        if not UNSUBSCRIBE_NEEDS.check({"subscription_id": sid, "subscription_type": st}):
            raise ProtocolError(
                "invalid_message",
                "give data.subscription_id or data.subscription_type",
                msg_id,
                t,
            )
        return Unsubscribe(msg_id, sid, st)
    if t == "auth":
        _known_keys(data, _FIELDS[t], msg_id, t)
        token = data.get("token")
        if not TOKEN.check(token):
            raise ProtocolError(
                "invalid_message",
                f"data.token must be a non-empty string of at most {MAX_TOKEN_LEN} characters",
                msg_id,
                t,
            )
        session_id = data.get("session_id")
        if session_id is not None and not SESSION_REQUEST.check(session_id):
            raise ProtocolError(
                "invalid_message",
                "data.session_id must be 'new' or 22-64 characters of A-Z a-z 0-9 _ -",
                msg_id,
                t,
            )
        resume = data.get("resume", False)
        if type(resume) is not bool:
            raise ProtocolError("invalid_message", "data.resume must be a boolean", msg_id, t)
        wrong = AUTH_SESSION_FIELDS.check(session_id, resume)
        if wrong is not None:
            raise ProtocolError("invalid_message", wrong, msg_id, t)
        return Auth(msg_id, token, session_id, resume)
    if t == "ack":
        _known_keys(data, _FIELDS[t], msg_id, t)
        return Ack(msg_id, _parse_positions(data.get("positions"), msg_id))
    if t == "heartbeat":
        return Heartbeat(msg_id)
    if t == "get_stats":
        return GetStats(msg_id)
    _known_keys(data, _FIELDS[t], msg_id, t)
    room = data.get("room")
    if not _room(room):
        raise ProtocolError(
            "invalid_message",
            f"data.room must be {ROOM.min_length}-{ROOM.max_length} characters of letters, "
            "digits and _ . : -",
            msg_id,
            t,
        )
    return Join(msg_id, room) if t == "join" else Leave(msg_id, room)


def ack(msg_id: Any, msg_type: str, result: dict[str, Any]) -> bytes:
    return server_message("message_ack", {"id": msg_id, "type": msg_type, "result": result})


def error_reply(err: ProtocolError) -> bytes:
    return server_message(
        "error",
        {"id": err.msg_id, "type": err.msg_type, "code": err.code, "message": err.message},
    )
