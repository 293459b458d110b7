"""Subscriptions as the application sees them, and the client's list of them.

:class:`Subscription` is the handle ``subscribe()`` returns; :class:`RecoveryFailed`
the notice it gets when its missed events cannot be replayed. They name each other
(a subscription's feed carries notices, a notice names its subscription), so they
live together. :class:`SubscriptionRegistry` holds what the client renews on every
connection: its subscriptions and its rooms. Nothing here does I/O or imports the
client's other parts; they import this.

A subscription's underscored attributes are the client's bookkeeping for it (the
connection it was last sent on, retries, where it began per stream, its first ack,
its feed), kept by :mod:`.subscribe`, :mod:`.resync` and :mod:`.dispatch`; they are
not for the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeAlias

from ..core.events import EventType, Payload, SubscriptionType
from ..core.subscriptions import EventAttributes, SubscriptionFilter
from ..core.subscriptions import Subscription as _Matcher
from .feed import Feed
from .models import Event

#: What the iterators yield: events, and recovery notices.
Item: TypeAlias = "Event[Payload] | RecoveryFailed"


class SubscriptionOwner(Protocol):
    """What a :class:`Subscription` needs of its client: to be removed by it."""

    async def unsubscribe(self, sub: Subscription) -> None: ...


class Subscription:
    """A subscription the client keeps across reconnects.

    ``async for event in subscription`` yields the events matching it (and its
    :class:`RecoveryFailed` notices); it ends when the subscription is removed and
    raises the client's error if the client stops for good.
    """

    def __init__(
        self,
        client: SubscriptionOwner,
        sid: str,
        subscription_type: str | None,
        filters: dict[str, Any],
        snapshot: bool,
        max_queue: int,
    ) -> None:
        self.client = client
        #: Stable client-side id (``s1``, ``s2``...); the server's id changes per connection.
        self.id = sid
        self.subscription_type = subscription_type
        self.filters = filters
        self.snapshot = snapshot
        #: The server's id for this subscription on the current connection.
        self.server_id: str | None = None
        #: Event types the server confirmed (narrowed, e.g., by the tier).
        self.event_types: tuple[str, ...] = ()
        self.streams: tuple[str, ...] = ()
        #: ``recovered`` of the last resubscribe ack (None: not resubscribed yet).
        self.recovered: bool | None = None
        self.active = True
        self._matcher: _Matcher | None = None
        self._gen = -1
        self._retries = 0
        # Per stream, (epoch, offset) when this subscription began: events at or
        # below it predate it (a replay from an older position may carry them).
        self._start: dict[str, tuple[str, int]] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._feed: Feed[Item] | None = (
            Feed(max_queue, f"subscription {sid}") if max_queue > 0 else None
        )

    def __repr__(self) -> str:
        return (
            f"<Subscription {self.id} {self.subscription_type or '-'} {self.filters} "
            f"server_id={self.server_id}>"
        )

    def matches(self, event: Event[Any]) -> bool:
        """Whether ``event`` is one this subscription asked for (by its confirmed filters)."""
        m = self._matcher
        if m is None or not self.active:
            return False
        try:
            et = EventType(event.event_type)
        except ValueError:
            return False
        return m.matches(EventAttributes.of(et, event.raw.get("data") or {}))

    def _after_start(self, event: Event[Any]) -> bool:
        start = self._start.get(event.stream or "")
        return start is None or event.offset is None or event.offset > start[1]

    def _apply_ack(self, result: Mapping[str, Any]) -> None:
        sid = result.get("subscription_id")
        self.server_id = sid if isinstance(sid, str) else None
        types = result.get("event_types")
        self.event_types = tuple(t for t in types if isinstance(t, str)) if types else ()
        streams = result.get("streams")
        self.streams = tuple(streams) if isinstance(streams, Mapping) else ()
        known = []
        for t in self.event_types:
            with contextlib.suppress(ValueError):
                known.append(EventType(t))
        try:
            flt = SubscriptionFilter.model_validate(result.get("filters") or self.filters)
        except ValueError:
            flt = SubscriptionFilter()
        st = None
        if self.subscription_type is not None:
            with contextlib.suppress(ValueError):
                st = SubscriptionType(self.subscription_type)
        self._matcher = _Matcher(self.id, None, st, frozenset(known), flt)

    def __aiter__(self) -> Feed[Item]:
        if self._feed is None:
            raise RuntimeError("the client was created with max_queue=0: use handlers")
        return self._feed.__aiter__()

    async def unsubscribe(self) -> None:
        await self.client.unsubscribe(self)


@dataclass(frozen=True, slots=True)
class RecoveryFailed:
    """The events a subscription missed while disconnected cannot be replayed.

    Sent when a resubscribe ack says ``recovered: false`` (history no longer reaches
    back, the server restarted without a shared broker, the stream's epoch changed)
    or when the client sees a stream's epoch change. Reload the state this
    subscription feeds (e.g. from the REST API); events that follow are live.
    Delivered to ``async for`` iterators (client and subscription), to handlers
    registered with ``client.on("recovery_failed", ...)`` and to the
    ``on_recovery_failed`` callback.
    """

    event_type: ClassVar[str] = "recovery_failed"

    subscription: Subscription
    streams: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "data": {
                "subscription_id": self.subscription.id,
                "subscription_type": self.subscription.subscription_type,
                "streams": list(self.streams),
                "reason": self.reason,
            },
        }


class SubscriptionRegistry:
    """The subscriptions (by client-side id) and rooms the client keeps."""

    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}
        self._ids = itertools.count(1)
        #: Joined rooms, rejoined on every connection.
        self.rooms: set[str] = set()

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._subs.values())

    def __len__(self) -> int:
        return len(self._subs)

    def new_id(self) -> str:
        return f"s{next(self._ids)}"

    def add(self, sub: Subscription) -> None:
        self._subs[sub.id] = sub

    def holds(self, sub: Subscription) -> bool:
        return self._subs.get(sub.id) is sub

    def remove(self, sub: Subscription, exc: BaseException | None) -> None:
        """Stop ``sub``: inactive, forgotten, its iterator ends (raising ``exc`` if given)."""
        sub.active = False
        if self.holds(sub):
            del self._subs[sub.id]
        if sub._feed is not None:
            sub._feed.end(exc)

    def fail_waiting(self, exc: BaseException) -> None:
        """Subscriptions still waiting for their first ack fail with ``exc``."""
        for sub in self._subs.values():
            if not sub._ready.done():
                sub._ready.set_exception(exc)
                sub._ready.exception()  # retrieved: subscribe() may be gone

    def end_feeds(self, exc: BaseException | None) -> None:
        for sub in self._subs.values():
            if sub._feed is not None:
                sub._feed.end(exc)
