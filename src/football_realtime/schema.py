"""JSON Schema of the wire protocol, exported from the models the server validates with.

``football-realtime schema`` prints one JSON Schema document (draft 2020-12). Its
``$defs`` hold:

* ``RealtimeEvent`` (the envelope), the 15 payload models (``PredictionCreated``...)
  and one envelope per event type (``PredictionCreatedEvent``...), with
  ``EventPayloadMap`` mapping each event type to its payload;
* the client messages (``SubscribeMessage``... united in ``ClientMessage``), one entry
  per type in :data:`CLIENT_MESSAGES`, built from ``core/messages.py``: the definitions
  the server's parser checks against too (one source for every constraint);
* the server replies (``MessageAckEvent`` whose ``data`` is one of the per-type acks,
  ``ErrorReplyEvent`` with the ``ErrorCode`` enum), all united in ``ServerMessage``;
* ``CloseCode``; the close-code table itself, with the ranges in which a client
  reconnects, is under ``x-close-codes`` (derived from ``should_reconnect``).

Output is deterministic (sorted keys) so that clients can check their generated
types against it and fail on drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model
from pydantic.json_schema import models_json_schema

from .core.close_codes import CLOSE_CODE_DOCS, CloseCode, is_terminal, should_reconnect
from .core.events import (
    CONNECTION_EVENT_TYPES,
    EVENT_STREAM,
    PAYLOAD_MODELS,
    STREAM_EVENT_TYPES,
    EventType,
    RealtimeEvent,
    SubscriptionType,
)
from .core.messages import CLIENT_MESSAGE_DEFS, MessageId, StreamPosition
from .core.protocol import ERROR_CODES

SCHEMA_ID: Final = "urn:football-realtime:protocol"

#: ``Literal`` with values known only at run time (one model per message or event type).
_Literal: Any = Literal

Timestamp = Annotated[str, Field(description="ISO-8601 date-time with a time zone.")]
#: Derived from ``core.protocol.ERROR_CODES`` so the schema lists exactly what the server sends.
ErrorCode: Any = StrEnum("ErrorCode", {code: code for code in ERROR_CODES})  # type: ignore[misc]


# -- replies ---------------------------------------------------------------------


class SubscriptionInfo(BaseModel):
    """One subscription as the server describes it."""

    model_config = ConfigDict(extra="allow")
    subscription_id: str
    subscription_type: SubscriptionType | None
    event_types: list[EventType]
    filters: dict[str, Any] = Field(description="The filter as given (see SubscriptionFilter).")


@dataclass(frozen=True, slots=True)
class AckStreamPosition(StreamPosition):
    """A stream's newest position at subscribe time; for a stream named in ``since``,
    whether it was ``recovered`` and, when a replay follows, the offset it starts after
    (``replay_after``: 0 when a new epoch is replayed from its start). ``history_from``
    (a resumed durable session beyond the history): the replay has only the critical
    event types up to this offset, and every event from it on."""

    recovered: bool | None = None
    replay_after: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    history_from: Annotated[int, Field(ge=1, lt=2**63)] | None = None


class SubscribeResult(SubscriptionInfo):
    """``streams``: current position per stream covered. ``recovered``/``reason`` answer
    ``since``: false means events were missed and the application should reload state
    (the events of streams with ``replay_after`` are replayed all the same)."""

    streams: dict[SubscriptionType, AckStreamPosition]
    recovered: bool | None = None
    reason: str | None = None


class UnsubscribeResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    removed: list[SubscriptionInfo]
    subscriptions: list[SubscriptionInfo]


class HeartbeatResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    server_time: Timestamp


class GetStatsResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    connection: dict[str, Any]
    server: dict[str, Any]


class AuthResult(BaseModel):
    """The connection's identity and tier after ``auth`` (first time or refresh);
    ``removed`` lists subscriptions a tier downgrade took away."""

    model_config = ConfigDict(extra="allow")
    user_id: str
    authenticated: bool
    tier: str
    expires_at: Timestamp | None
    permissions: dict[str, Any]
    subscriptions: list[SubscriptionInfo]
    removed: list[SubscriptionInfo]


class RoomResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    room: str
    rooms: list[str]


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One client message type: its ``data``, whether ``data`` is required, its ack result
    (None: a valid message gets no reply, as ``ack``)."""

    data: type[BaseModel]
    data_required: bool
    result: type[BaseModel] | None


#: The ack result of each client message type (None: no reply when valid).
_RESULTS: Final[dict[str, type[BaseModel] | None]] = {
    "auth": AuthResult,
    "subscribe": SubscribeResult,
    "unsubscribe": UnsubscribeResult,
    "heartbeat": HeartbeatResult,
    "get_stats": GetStatsResult,
    "join": RoomResult,
    "leave": RoomResult,
    "ack": None,
}

#: Every client message type: its definition (``core.messages.CLIENT_MESSAGE_DEFS``,
#: which the parser uses too) with its ack result.
CLIENT_MESSAGES: Final[dict[str, MessageSpec]] = {
    name: MessageSpec(d.data, d.data_required, _RESULTS[name])
    for name, d in CLIENT_MESSAGE_DEFS.items()
}


ClientMessageType: Any = StrEnum(  # type: ignore[misc]
    "ClientMessageType", {name: name for name in CLIENT_MESSAGES}
)


class ErrorReply(BaseModel):
    """The reply to a request that failed; the connection stays open."""

    model_config = ConfigDict(extra="allow")
    id: MessageId
    type: ClientMessageType | None = Field(
        description="The request's type when it was recognised, else null."
    )
    code: ErrorCode
    message: str


# -- building --------------------------------------------------------------------


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def _union(name: str, members: list[type[BaseModel]], discriminator: str) -> type[BaseModel]:
    union: Any = members[0]
    for m in members[1:]:
        union = union | m
    root: Any = RootModel[Annotated[union, Field(discriminator=discriminator)]]
    model: type[BaseModel] = type(name, (root,), {"__module__": __name__})
    return model


def _client_message_models() -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = []
    for name, spec in CLIENT_MESSAGES.items():
        data: Any = (spec.data, ...) if spec.data_required else (spec.data | None, None)
        models.append(
            # The envelope is open: the server ignores unknown top-level fields.
            create_model(
                f"{_camel(name)}Message",
                __config__=ConfigDict(extra="allow"),
                __module__=__name__,
                type=(_Literal[name], ...),
                id=(MessageId, None),
                data=data,
            )
        )
    return models


def _ack_models() -> list[type[BaseModel]]:
    return [
        create_model(
            f"{_camel(name)}Ack",
            __config__=ConfigDict(extra="allow"),
            __module__=__name__,
            id=(MessageId, ...),
            type=(_Literal[name], ...),
            result=(spec.result, ...),
        )
        for name, spec in CLIENT_MESSAGES.items()
        if spec.result is not None
    ]


def _envelope(name: str, event_type: str, data: Any, stream: Any = None) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "event_type": (_Literal[event_type], ...),
        "data": (data, ...),
        "timestamp": (Timestamp, ...),
        "source": (str, None),
        "correlation_id": (str, None),
    }
    if stream is not None:
        # Absent when the event was sent to a user, connection or room instead of published.
        fields["stream"] = (_Literal[stream], None)
        fields["offset"] = (Annotated[int, Field(ge=1)], None)
    return create_model(name, __config__=ConfigDict(extra="allow"), __module__=__name__, **fields)


def _event_models() -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    for et, payload in PAYLOAD_MODELS.items():
        stream = EVENT_STREAM[et].value if et not in CONNECTION_EVENT_TYPES else None
        out.append(_envelope(f"{payload.__name__}Event", et.value, payload, stream))
    return out


def _ranges(pred: Any, lo: int = 1000, hi: int = 4999) -> list[list[int]]:
    out: list[list[int]] = []
    for code in range(lo, hi + 1):
        if pred(code):
            if out and out[-1][1] == code - 1:
                out[-1][1] = code
            else:
                out.append([code, code])
    return out


def close_code_table() -> dict[str, Any]:
    """The close codes with what a client does on each, and the reconnect ranges."""
    return {
        "codes": [
            {
                "code": int(c),
                "name": c.name,
                "meaning": CLOSE_CODE_DOCS[c][0],
                "action": CLOSE_CODE_DOCS[c][1],
                "reconnect": should_reconnect(c),
                "terminal": is_terminal(c),
            }
            for c in CloseCode
        ],
        "reconnect_ranges": _ranges(should_reconnect),
        "terminal_ranges": _ranges(is_terminal),
        "description": "A client reconnects (with backoff) after a close code inside one of "
        "reconnect_ranges (inclusive) and never otherwise; terminal_ranges need the user or "
        "application to change something first.",
    }


def _strip_titles(node: Any, keep: bool = False) -> Any:
    """Drop pydantic's per-field titles: generators turn them into needless named types."""
    if isinstance(node, dict):
        return {
            k: _strip_titles(v, keep=(k == "$defs"))
            if k != "$defs"
            else {name: _strip_titles(d, keep=True) for name, d in v.items()}
            for k, v in node.items()
            if not (k == "title" and not keep and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def build_schema() -> dict[str, Any]:
    """The whole protocol as one JSON Schema document."""
    events = _event_models()
    acks = _ack_models()
    ack_union = _union("MessageAck", acks, "type")
    ack_event = _envelope("MessageAckEvent", "message_ack", ack_union)
    error_event = _envelope("ErrorReplyEvent", "error", ErrorReply)
    client_messages = _client_message_models()
    payload_map = create_model(
        "EventPayloadMap",
        __module__=__name__,
        **{et.value: (model, ...) for et, model in PAYLOAD_MODELS.items()},  # type: ignore[call-overload]
    )
    models: list[type[BaseModel]] = [
        RealtimeEvent,
        payload_map,
        *events,
        _union("ServerMessage", [*events, ack_event, error_event], "event_type"),
        _union("ClientMessage", client_messages, "type"),
    ]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template="#/$defs/{model}")
    defs: dict[str, Any] = dict(top["$defs"])
    defs["ErrorCode"]["description"] = "Code of an `error` reply; meanings in x-error-codes."
    defs["CloseCode"] = {
        "type": "integer",
        "enum": [int(c) for c in CloseCode],
        "description": "WebSocket close codes the server uses; see x-close-codes.",
    }
    doc: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "FootballRealtimeProtocol",
        "description": "Every frame on /realtime/ws: a ClientMessage (client to server) or a "
        "ServerMessage (server to client). Generated by `football-realtime schema`.",
        "anyOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
        "$defs": defs,
        "x-close-codes": close_code_table(),
        "x-error-codes": dict(ERROR_CODES),
        "x-streams": {
            st.value: [et.value for et in STREAM_EVENT_TYPES[st]] for st in STREAM_EVENT_TYPES
        },
        "x-event-types": [et.value for et in EventType],
        "x-connection-event-types": sorted(et.value for et in CONNECTION_EVENT_TYPES),
    }
    result: dict[str, Any] = _strip_titles(doc, keep=True)
    return result


def schema_json() -> bytes:
    """The schema as deterministic JSON text (sorted keys, two-space indent, final newline)."""
    return orjson.dumps(build_schema(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
