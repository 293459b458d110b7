"""What the client hands the application: typed events, its state, its counters.

Plain data, importing nothing else of the client: the recovery notice, which names a
subscription, lives with :class:`~.subscription.Subscription`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from ..core.events import PAYLOAD_MODELS, EventType, Payload

log = logging.getLogger("football_realtime.client")

P = TypeVar("P", bound=Payload, covariant=True)
Q = TypeVar("Q", bound=Payload)


class ClientState(StrEnum):
    """Where the client is. ``open``: connected and every subscription is live."""

    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Event(Generic[P]):
    """One event pushed by the server: the envelope, with ``data`` parsed into the
    payload model of its type (``core.events.PAYLOAD_MODELS``; unknown fields kept as
    attributes). ``raw`` is the envelope exactly as received; ``stream`` and
    ``offset`` are set on published events, None on connection-level ones."""

    event_type: str
    data: P
    timestamp: str | None
    stream: str | None
    offset: int | None
    source: str | None
    correlation_id: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    #: True for state sent because the subscription asked for ``snapshot``: the latest
    #: event per (event type, match) from before it, not a new event.
    snapshot: bool = False

    def as_(self, model: type[Q]) -> Event[Q]:
        """This event typed as carrying ``model`` (``TypeError`` if it does not)."""
        if not isinstance(self.data, model):
            raise TypeError(f"{self.event_type} carries {type(self.data).__name__}")
        return self  # type: ignore[return-value]


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_event(envelope: dict[str, Any], warned: set[str] | None = None) -> Event[Payload]:
    """Build an :class:`Event` from a received envelope.

    A payload its model refuses (a server newer or older than this client) or an
    event type this client does not know still arrives, with ``data`` as a plain
    :class:`Payload` holding every field; a warning is logged once per type (per
    ``warned`` set).
    """
    if warned is None:
        warned = set()
    name = str(envelope.get("event_type"))
    raw_data = envelope.get("data")
    data_dict: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    event_type: str = name
    data: Payload
    try:
        et = EventType(name)
    except ValueError:
        _warn_once(warned, name, "unknown event type")
        data = Payload.model_validate(data_dict, strict=False)
    else:
        event_type = et
        try:
            data = PAYLOAD_MODELS[et].model_validate(data_dict)
        except ValidationError as exc:
            _warn_once(
                warned, name, f"payload does not match its model ({exc.error_count()} error(s))"
            )
            data = Payload.model_construct(**data_dict)
    offset = envelope.get("offset")
    return Event(
        event_type=event_type,
        data=data,
        timestamp=_opt_str(envelope.get("timestamp")),
        stream=_opt_str(envelope.get("stream")),
        offset=offset if type(offset) is int else None,
        source=_opt_str(envelope.get("source")),
        correlation_id=_opt_str(envelope.get("correlation_id")),
        raw=envelope,
    )


def _warn_once(warned: set[str], name: str, what: str) -> None:
    key = f"{name}:{what}"
    if key not in warned:
        warned.add(key)
        log.warning("event %r: %s; delivered with untyped data", name[:60], what)


@dataclass(slots=True)
class ClientStats:
    """Counters of one client, for logs and tests."""

    connections: int = 0
    reconnects: int = 0
    events: int = 0
    duplicates_dropped: int = 0
    recoveries: int = 0
    recoveries_failed: int = 0
