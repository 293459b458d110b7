"""The client messages, defined once: the parser and the published JSON Schema come from here.

A client message is ``{"type": ..., "id": <optional>, "data": {...}}``. Every constraint
on one is written once, in this module, as a *rule*: a small frozen value that renders
itself two ways.

* ``rule.field()`` is a pydantic ``Field`` carrying the constraint (``maxLength``,
  ``pattern``, ``minimum``, ...). The ``data`` models below (:class:`SubscribeData`...)
  are built only from rules, and ``schema.py`` publishes those models, so the JSON
  Schema (and the TypeScript types generated from it) state exactly these constraints.
* ``rule.check(value)`` is the same constraint as a plain function: an exact type test,
  a comparison, a compiled *full* match. The hand parser (``core/protocol.py``) runs
  these, so the hot path keeps its speed (no pydantic model per message) and its own
  precise error codes and messages, while taking every bound, pattern and field list
  from here.

Cross-field rules are rules too. :class:`AnyOf` (``subscribe`` needs
``subscription_type`` unless ``filters.event_types`` is given; ``unsubscribe`` needs one
of its two fields) renders an ``if``/``then`` for the model's schema and a check for the
parser. :class:`WithinStream` (the event types listed belong to the stream named) renders
an ``allOf`` of ``if``/``then``; its check is ``effective_event_types``, which the hub
runs (the answer is ``invalid_filter`` either way). :data:`CLIENT_MESSAGE_DEFS` lists the
message types with their ``data`` model; the parser takes its type list and each type's
allowed ``data`` fields from it. Subscription filters are the one pydantic model the
parser runs itself (``core/subscriptions.py``): one model, for schema and check alike.

The envelope is open and ``data`` is closed: unknown top-level fields are ignored (later
versions may add envelope fields), unknown fields inside ``data`` (and inside a ``since``
position) are refused so that a typo never widens or silently changes a request.
``heartbeat`` and ``get_stats`` take no data and ignore whatever object is given.

One limit of JSON Schema: it treats ``1.0`` as an integer, the server does not (an id,
match id or offset must be written as a JSON integer). The schema cannot say so; the
descriptions and docs/protocol.md do.

``tests/core/test_schema_agreement.py`` checks the two renderings against each other with
property-based generation: every message generated from the schema is accepted by the
parser, and schema and parser give the same verdict on near misses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .events import STREAM_EVENT_TYPES, SubscriptionType
from .subscriptions import SubscriptionFilter, effective_event_types

# -- rules -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """A string: ``min_length``..``max_length`` characters, fully matching ``pattern``.

    ``pattern`` is written without anchors; the schema gets it as ``^(?:pattern)$``
    (ECMA-262 ``$`` is the end of input) and the parser uses ``re.fullmatch`` (Python's
    ``$`` would also match before a final newline).
    """

    max_length: int
    min_length: int = 0
    pattern: str | None = None
    description: str | None = None
    _match: Callable[[str], Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "_match", re.compile(self.pattern).fullmatch)

    @property
    def schema_pattern(self) -> str | None:
        return None if self.pattern is None else f"^(?:{self.pattern})$"

    def field(self) -> Any:
        return Field(
            min_length=self.min_length or None,
            max_length=self.max_length,
            pattern=self.schema_pattern,
            description=self.description,
        )

    def check(self, value: Any) -> TypeGuard[str]:
        if type(value) is not str or not self.min_length <= len(value) <= self.max_length:
            return False
        return self._match is None or self._match(value) is not None


@dataclass(frozen=True, slots=True)
class Integer:
    """A JSON integer (not a bool, not ``1.0``) with ``ge <= n <= le``."""

    ge: int
    le: int
    description: str | None = None

    def field(self) -> Any:
        return Field(ge=self.ge, le=self.le, description=self.description)

    def check(self, value: Any) -> TypeGuard[int]:
        return type(value) is int and self.ge <= value <= self.le


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one of these paths names a non-null value (``("filters", "event_types")``
    is ``data.filters.event_types``)."""

    paths: tuple[tuple[str, ...], ...]

    def json_schema(self) -> dict[str, Any]:
        """``if`` the first path is absent or null ``then`` the next must be given, and so
        on (an ``if``/``then`` chain rather than ``anyOf``, which type generators would
        turn into a union of partial types)."""

        def present(path: tuple[str, ...]) -> dict[str, Any]:
            inner: dict[str, Any] = {"not": {"type": "null"}}
            for depth, name in enumerate(reversed(path)):
                inner = {"required": [name], "properties": {name: inner}}
                if depth < len(path) - 1:
                    inner["type"] = "object"  # ``properties`` alone would let null through
            return inner

        out: dict[str, Any] = present(self.paths[-1])
        for path in reversed(self.paths[:-1]):
            out = {"if": {"not": present(path)}, "then": out}
        return out

    def check(self, data: Any) -> bool:
        for path in self.paths:
            node = data
            for name in path:
                node = getattr(node, name, None) if not isinstance(node, dict) else node.get(name)
                if node is None:
                    break
            if node is not None:
                return True
        return False


@dataclass(frozen=True, slots=True)
class WithinStream:
    """Given both, ``subscription_type`` and ``filters.event_types`` agree: every event
    type listed belongs to that stream (``core.events.STREAM_EVENT_TYPES``)."""

    def json_schema(self) -> dict[str, Any]:
        return {
            "allOf": [
                {
                    "if": {
                        "required": ["subscription_type"],
                        "properties": {"subscription_type": {"const": st.value}},
                    },
                    "then": {
                        "properties": {
                            "filters": {
                                "properties": {
                                    "event_types": {"items": {"enum": [et.value for et in ets]}}
                                }
                            }
                        }
                    },
                }
                for st, ets in STREAM_EVENT_TYPES.items()
            ]
        }

    def check(self, subscription_type: SubscriptionType | None, flt: SubscriptionFilter) -> bool:
        try:
            effective_event_types(subscription_type, flt)
        except ValueError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class SessionFields:
    """``auth``'s session fields agree: ``resume: true`` needs a ``session_id``, and a
    ``session_id`` other than ``new`` names a session to resume (``resume: true``)."""

    def json_schema(self) -> dict[str, Any]:
        resume_true = {"required": ["resume"], "properties": {"resume": {"const": True}}}
        return {
            "allOf": [
                {
                    "if": resume_true,
                    "then": {
                        "required": ["session_id"],
                        "properties": {"session_id": {"type": "string"}},
                    },
                },
                {
                    "if": {
                        "required": ["session_id"],
                        "properties": {"session_id": {"type": "string", "not": {"const": "new"}}},
                    },
                    "then": resume_true,
                },
            ]
        }

    def check(self, session_id: str | None, resume: bool) -> str | None:
        """None when they agree, else what is wrong."""
        if resume and session_id is None:
            return "data.resume needs data.session_id"
        if session_id is not None and session_id != "new" and not resume:
            return (
                "data.session_id names a session to resume: give data.resume: true "
                "(or ask for 'new')"
            )
        return None


# -- the constraints -------------------------------------------------------------

MESSAGE_ID_TEXT: Final = Text(max_length=128)
MESSAGE_ID_INT: Final = Integer(ge=-(2**53), le=2**53)
TOKEN: Final = Text(min_length=1, max_length=8192, description="A JWT (see docs/security.md).")
ROOM: Final = Text(
    max_length=128,
    min_length=1,
    pattern=r"[A-Za-z0-9_.:\-]+",
    description="1-128 letters, digits and _ . : -",
)
SUBSCRIPTION_ID: Final = Text(max_length=128)
#: A durable session's id: long enough to be a bearer secret when random (22 base64url
#: characters are 132 bits); ``core/session_state.py``.
SESSION_ID: Final = Text(
    min_length=22,
    max_length=64,
    pattern=r"[A-Za-z0-9_-]+",
    description="A durable session id: 22-64 characters of A-Z a-z 0-9 _ -.",
)
#: What a client may ask for: an existing id, or ``new`` for one the server issues.
SESSION_REQUEST: Final = Text(
    min_length=3,
    max_length=64,
    pattern=r"new|[A-Za-z0-9_-]{22,64}",
    description="`new` (the server issues an id, sent in the welcome's `session.id`) or "
    "a session id of 22-64 characters of A-Z a-z 0-9 _ -.",
)
EPOCH: Final = Text(max_length=64)
OFFSET: Final = Integer(ge=0, le=2**63 - 1)
#: ``subscribe``: a stream, or an explicit list of event types, or both.
SUBSCRIBE_NEEDS: Final = AnyOf((("subscription_type",), ("filters", "event_types")))
#: ``subscribe``: the event types listed belong to the stream named. The parser leaves
#: this to the hub, which answers ``invalid_filter`` (``core.subscriptions.effective_event_types``).
SUBSCRIBE_WITHIN_STREAM: Final = WithinStream()
#: ``auth``: the session fields agree with each other.
AUTH_SESSION_FIELDS: Final = SessionFields()
#: ``unsubscribe``: by id, or every subscription of a type.
UNSUBSCRIBE_NEEDS: Final = AnyOf((("subscription_id",), ("subscription_type",)))


# -- the messages ----------------------------------------------------------------

MessageId = Annotated[
    Annotated[int, MESSAGE_ID_INT.field()] | Annotated[str, MESSAGE_ID_TEXT.field()] | None,
    Field(
        description="Echoed in the reply; a string (<= 128 chars) or an integer (|n| <= 2^53, "
        "written without a fraction)."
    ),
]


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A position in one stream: the ``offset`` of the last event seen in ``epoch``."""

    # The one StreamPosition: the parser's ``since`` values, the schema's (``since`` and
    # the subscribe results' ``streams``) and the Python client's recovery point.

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    epoch: Annotated[str, EPOCH.field()]
    offset: Annotated[int, OFFSET.field()]


class SubscribeData(BaseModel):
    """``subscription_type`` is required unless ``filters.event_types`` is given."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **SUBSCRIBE_NEEDS.json_schema(),
            **SUBSCRIBE_WITHIN_STREAM.json_schema(),
        },
    )
    subscription_type: SubscriptionType | None = None
    filters: SubscriptionFilter | None = None
    since: (
        Annotated[
            dict[SubscriptionType, StreamPosition],
            Field(
                min_length=1,
                description="Recover what was missed: the last position seen per stream.",
            ),
        ]
        | None
    ) = None
    snapshot: bool = False

    @model_validator(mode="after")
    def _needs(self) -> SubscribeData:
        if not SUBSCRIBE_NEEDS.check(self):
            raise ValueError("subscription_type is required unless filters.event_types is given")
        return self


class UnsubscribeData(BaseModel):
    """Give ``subscription_id``, or ``subscription_type`` to drop every subscription of it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=UNSUBSCRIBE_NEEDS.json_schema())
    subscription_id: Annotated[str, SUBSCRIPTION_ID.field()] | None = None
    subscription_type: SubscriptionType | None = None

    @model_validator(mode="after")
    def _needs(self) -> UnsubscribeData:
        if not UNSUBSCRIBE_NEEDS.check(self):
            raise ValueError("give subscription_id or subscription_type")
        return self


class RoomData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    room: Annotated[str, ROOM.field()]


class AuthData(BaseModel):
    """``session_id`` and ``resume`` open a durable session, as the handshake query's
    parameters of the same names do: only in the first ``auth`` of a connection that
    connected without a token."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=AUTH_SESSION_FIELDS.json_schema())
    token: Annotated[str, TOKEN.field()]
    session_id: Annotated[str, SESSION_REQUEST.field()] | None = None
    resume: bool = False

    @model_validator(mode="after")
    def _agree(self) -> AuthData:
        wrong = AUTH_SESSION_FIELDS.check(self.session_id, self.resume)
        if wrong is not None:
            raise ValueError(wrong)
        return self


class AckData(BaseModel):
    """Cumulative acknowledgement: per stream, every event up to ``offset`` (in
    ``epoch``) was processed by the client's application. No reply when valid."""

    model_config = ConfigDict(extra="forbid")
    positions: Annotated[
        dict[SubscriptionType, StreamPosition],
        Field(min_length=1, description="The newest processed position per stream."),
    ]


class NoData(BaseModel):
    """No fields; anything given is ignored."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True, slots=True)
class MessageDef:
    """One client message type: its ``data`` model and whether ``data`` is required."""

    data: type[BaseModel]
    data_required: bool

    @property
    def fields(self) -> tuple[str, ...]:
        """The ``data`` fields the parser allows (empty: anything is ignored)."""
        if self.data.model_config.get("extra") == "allow":
            return ()
        return tuple(self.data.model_fields)


#: Every client message type, in the order the protocol lists them. Adding one to the
#: protocol starts here (the parser refuses a type it has no branch for: a test checks).
CLIENT_MESSAGE_DEFS: Final[dict[str, MessageDef]] = {
    "auth": MessageDef(AuthData, True),
    "subscribe": MessageDef(SubscribeData, True),
    "unsubscribe": MessageDef(UnsubscribeData, True),
    "heartbeat": MessageDef(NoData, False),
    "get_stats": MessageDef(NoData, False),
    "join": MessageDef(RoomData, True),
    "leave": MessageDef(RoomData, True),
    "ack": MessageDef(AckData, True),
}

__all__ = [
    "AUTH_SESSION_FIELDS",
    "CLIENT_MESSAGE_DEFS",
    "EPOCH",
    "MESSAGE_ID_INT",
    "MESSAGE_ID_TEXT",
    "OFFSET",
    "ROOM",
    "SESSION_ID",
    "SESSION_REQUEST",
    "SUBSCRIBE_NEEDS",
    "SUBSCRIBE_WITHIN_STREAM",
    "SUBSCRIPTION_ID",
    "TOKEN",
    "UNSUBSCRIBE_NEEDS",
    "AckData",
    "AnyOf",
    "AuthData",
    "Integer",
    "MessageDef",
    "MessageId",
    "NoData",
    "RoomData",
    "SessionFields",
    "StreamPosition",
    "SubscribeData",
    "Text",
    "UnsubscribeData",
    "WithinStream",
]
