"""The broker interface: how a published event reaches every instance.

Guarantees every implementation gives (checked by one conformance suite run
against each):

* Each publish is assigned the next ``offset`` of its stream (one stream per
  subscription type), starting at 1, without gaps, and every instance's
  ``deliver`` callback sees a stream's events in offset order, each at most once.
* History: the most recent events of each stream (bounded by size and age) can be
  read back by offset; a stream's ``epoch`` changes when its history is lost.
* Snapshot: the newest event per (event type, match id) of each stream.
* Critical retention (optional, :class:`KeepsCritical`): events of the configured
  critical types are also kept, per stream, as long as durable sessions live.
* ``publish`` returns only after the event is durable in the broker's history and
  raises :class:`BrokerUnavailable` when it cannot; it never drops silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..core.errors import RemoteError
from ..core.events import EventType, SubscriptionType

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    #: A client of one Redis (also through Sentinel) or of a Redis Cluster: both route
    #: single-key commands and non-transactional pipelines of them.
    RedisClient = Redis | RedisCluster


class BrokerUnavailable(RemoteError, RuntimeError):
    """The broker cannot accept or deliver events right now (e.g. Redis is down)."""


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """An event after publishing: its envelope JSON, and what routing needs from it."""

    stream: SubscriptionType
    offset: int
    event_type: EventType
    data: dict[str, Any]
    payload: bytes  # the full envelope as sent to clients, stream and offset included
    published_at: float = field(default=0.0)  # wall-clock seconds, for latency metrics


@dataclass(frozen=True, slots=True)
class PublishResult:
    stream: SubscriptionType
    offset: int
    epoch: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class CriticalRetention:
    """Which events a broker keeps beyond its history, for durable sessions
    (``REALTIME_SESSION_CRITICAL_TYPES``, ``REALTIME_SESSION_TTL``,
    ``REALTIME_SESSION_CRITICAL_SIZE``): per stream, the events of ``types`` of the last
    ``ttl`` seconds, at most ``size`` of them."""

    types: frozenset[EventType] = frozenset()
    ttl: float = 900.0
    size: int = 10_000


Deliver = Callable[[PublishedEvent], object]
#: Called when a stream's delivery lost continuity on this instance: ``(stream, epoch)``
#: when its history was lost and it now has a new epoch (subscribers positioned under
#: another epoch must reconnect and recover), ``(stream, None)`` when events were
#: trimmed before this instance could deliver them (every subscriber of the stream must).
Reset = Callable[[SubscriptionType, str | None], object]


class Broker(Protocol):
    name: str

    async def start(self, deliver: Deliver, on_reset: Reset | None = None) -> None:
        """Begin delivering every stream's events to ``deliver`` (called on the loop);
        ``on_reset`` hears of lost continuity (never called by a one-process broker)."""

    async def stop(self) -> None: ...

    async def publish(
        self, envelope: dict[str, Any], stream: SubscriptionType, idempotency_key: str | None
    ) -> PublishResult:
        """Assign the next offset of ``stream``, store and deliver ``envelope``."""

    async def position(self, stream: SubscriptionType) -> tuple[str, int]:
        """(epoch, offset of the newest event) of ``stream``; offset 0 when empty."""

    async def history(self, stream: SubscriptionType, after: int) -> list[PublishedEvent] | None:
        """Events of ``stream`` with offset > ``after``, oldest first; None when the
        history no longer reaches back to ``after + 1``."""

    async def snapshot(self, stream: SubscriptionType) -> list[PublishedEvent]:
        """The newest event per (event_type, match_id) of ``stream`` (match_id None for
        events without one), oldest offset first."""

    async def healthy(self) -> bool: ...


@runtime_checkable
class SharesRedis(Protocol):
    """Optional ability: a broker whose Redis client other components share (the
    cluster registry keeps the cluster's connections and figures there). On a Redis
    Cluster it is a ``RedisCluster``: users keep to single-key commands (pipelines of
    them are fine: the client sends each to its slot's master)."""

    @property
    def redis(self) -> RedisClient: ...


@runtime_checkable
class StoresSessions(Protocol):
    """Optional ability: keeps durable sessions' state (docs/protocol.md, Sessions).

    The state is opaque bytes (``core.session_state``) kept under the session id for
    ``ttl`` seconds after the last write or touch, visible to every instance sharing the
    broker (Redis) or to this process (memory). Each authenticated owner's sessions are
    indexed so :meth:`count_sessions` can bound them; an expired session leaves the
    index when it expires. A write is complete when the call returns; Redis errors
    raise :class:`BrokerUnavailable`."""

    async def load_session(self, session_id: str) -> bytes | None:
        """The stored state, or None when the session does not exist (or expired)."""
        ...

    async def save_session(
        self, session_id: str, state: bytes, ttl: float, owner: str | None
    ) -> None:
        """Store ``state``, to expire ``ttl`` seconds from now; index it under ``owner``."""
        ...

    async def touch_sessions(self, sessions: Sequence[tuple[str, str | None]], ttl: float) -> None:
        """Push the expiry of existing ``(session_id, owner)`` sessions to ``ttl`` seconds
        from now (their connections are still open); absent ones stay absent."""
        ...

    async def count_sessions(self, owner: str) -> int:
        """How many unexpired sessions ``owner`` holds."""
        ...


@runtime_checkable
class KeepsCritical(Protocol):
    """Optional ability: keeps each stream's events of the critical types
    (:class:`CriticalRetention`) beyond the history, and reads what the history still
    holds when it no longer reaches back (docs/protocol.md, Sessions: a resumed session
    whose history is gone still gets its critical events).

    Like :meth:`Broker.history`, both read only what this instance has delivered (later
    events reach the caller live) under the stream's current epoch."""

    @property
    def critical(self) -> CriticalRetention: ...

    async def critical_history(self, stream: SubscriptionType, after: int) -> list[PublishedEvent]:
        """The retained critical events of ``stream`` with offset > ``after``, oldest
        first (younger than ``critical.ttl``, the newest ``critical.size``)."""
        ...

    async def history_tail(self, stream: SubscriptionType, after: int) -> list[PublishedEvent]:
        """What the history still holds of ``stream`` after ``after``, oldest first: the
        same as :meth:`Broker.history` when it reaches back, else a later start (never
        None; empty when nothing is left)."""
        ...
