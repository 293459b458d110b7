"""Durable sessions, the pure part: what a session holds and the rules on it. No I/O.

A durable session (docs/protocol.md, Sessions) outlives its connections: it holds
the subscriptions a client made (type and filters) and, per stream, the position its
application acknowledged (``ack``: "every event of this stream up to this offset was
processed"). A client that resumes the session gets its subscriptions back and every
event after those positions.

:class:`SessionState` is that state with its wire form for the broker
(:meth:`SessionState.encode`, :meth:`SessionState.decode`, compact JSON), and the
rules: positions only move forward within an epoch (a new epoch replaces them), a
subscription names its streams' positions when it is made. The service keeps one per
connection that opened a session (``service/durable_sessions.py``); the broker's
``StoresSessions`` ability stores the encoded bytes with the session's TTL.

Session ids are bearer secrets for anonymous sessions, so every id is long and random:
``session_id=new`` has the server issue one (:func:`new_session_id`, 192 bits), and an
id a client makes itself must be 22-64 characters of ``[A-Za-z0-9_-]`` (at least 128
bits when random; :data:`SESSION_ID`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from .events import SubscriptionType
from .messages import SESSION_ID

#: The ``session_id`` value that asks the server to issue a new session id.
NEW_SESSION: Final = "new"
#: Version of the stored form; a state of another version is treated as absent.
STATE_VERSION: Final = 1


def new_session_id() -> str:
    """A fresh, unguessable session id: 32 characters of base64url (192 bits)."""
    return secrets.token_urlsafe(24)


def valid_session_id(value: str) -> bool:
    """Whether ``value`` may name a durable session (``new`` is not an id)."""
    return SESSION_ID.check(value)


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A subscription as a session remembers it: what to subscribe to again."""

    subscription_type: str | None
    filters: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.subscription_type}
        if self.filters:
            out["f"] = self.filters
        return out


class InvalidState(ValueError):
    """Stored bytes that are not a session state of this version."""


@dataclass(slots=True)
class SessionState:
    """One durable session: owner, subscriptions (by the connection's subscription id),
    and the acknowledged position per stream."""

    id: str
    #: The authenticated user it belongs to; None: anonymous (the id is the only key).
    owner: str | None
    subscriptions: dict[str, SubscriptionSpec] = field(default_factory=dict)
    #: stream -> (epoch, offset): the newest offset the client acknowledged (or, before
    #: any ack, the position its first subscription to the stream started from).
    positions: dict[SubscriptionType, tuple[str, int]] = field(default_factory=dict)

    # -- rules ---------------------------------------------------------------------

    def start_stream(self, stream: SubscriptionType, epoch: str, offset: int) -> None:
        """A subscription starts delivering ``stream`` after ``offset``: the session's
        position there, unless it already holds one in the same epoch."""
        held = self.positions.get(stream)
        if held is None or held[0] != epoch:
            self.positions[stream] = (epoch, offset)

    def acknowledge(self, stream: SubscriptionType, epoch: str, offset: int) -> bool:
        """The client processed ``stream`` up to ``offset`` (in ``epoch``): move the
        position forward (never back); a new epoch replaces it. True when it moved."""
        held = self.positions.get(stream)
        if held is not None and held[0] == epoch and held[1] >= offset:
            return False
        self.positions[stream] = (epoch, offset)
        return True

    def streams_in_use(self, covered: set[SubscriptionType]) -> None:
        """Forget positions of streams no subscription covers any more."""
        for st in [st for st in self.positions if st not in covered]:
            del self.positions[st]

    # -- stored form -----------------------------------------------------------------

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "o": self.owner,
                "s": [spec.to_wire() for spec in self.subscriptions.values()],
                "p": {st.value: [e, o] for st, (e, o) in self.positions.items()},
            }
        )

    def size_with(self, extra: SubscriptionSpec | None = None) -> int:
        """Bytes of the stored form, with ``extra`` added (to check a bound first)."""
        size = len(self.encode())
        if extra is not None:
            size += len(orjson.dumps(extra.to_wire())) + 1
        return size

    @classmethod
    def decode(cls, session_id: str, raw: bytes) -> SessionState:
        """The state stored under ``session_id``; subscriptions get ids ``s1``, ``s2``...
        until the connection that resumes it subscribes them again."""
        try:
            obj = orjson.loads(raw)
            if type(obj) is not dict or obj.get("v") != STATE_VERSION:
                raise InvalidState("not a session state of this version")
            owner = obj.get("o")
            if owner is not None and type(owner) is not str:
                raise InvalidState("owner")
            subs: dict[str, SubscriptionSpec] = {}
            for i, spec in enumerate(obj.get("s") or (), 1):
                t = spec.get("t")
                f = spec.get("f") or {}
                if (t is not None and type(t) is not str) or type(f) is not dict:
                    raise InvalidState("subscription")
                subs[f"s{i}"] = SubscriptionSpec(t, f)
            positions: dict[SubscriptionType, tuple[str, int]] = {}
            for st, pos in (obj.get("p") or {}).items():
                epoch, offset = pos
                if type(epoch) is not str or type(offset) is not int or offset < 0:
                    raise InvalidState("position")
                positions[SubscriptionType(st)] = (epoch, offset)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidState):
                raise
            raise InvalidState(f"unreadable session state: {exc}") from None
        return cls(session_id, owner, subs, positions)


__all__ = [
    "NEW_SESSION",
    "STATE_VERSION",
    "InvalidState",
    "SessionState",
    "SubscriptionSpec",
    "new_session_id",
    "valid_session_id",
]
