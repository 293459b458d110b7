"""Subscriptions, their filters, and the index that finds who receives an event.

Filter semantics (seed: 订阅管理器 SubscriptionFilter):

* every field that is set must match (AND); inside a list any value matches (OR);
* an absent or null field does not constrain; an empty list is invalid;
* a set field constrains strictly: an event without ``match_id`` / ``league`` /
  ``confidence`` does not match a filter that sets that field;
* ``min_confidence`` matches ``data.confidence >= min_confidence``.
"""

from __future__ import annotations

import functools
import itertools
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .events import EVENT_STREAM, STREAM_EVENT_TYPES, EventType, SubscriptionType

MAX_MATCH_IDS = 1000
MAX_LEAGUES = 100

#: Schema of ``event_types``: no event type sent only to connections (the validator
#: below refuses those). Stated as ``not contains`` on the list so that generated
#: TypeScript keeps ``EventType[]``.
_SUBSCRIBABLE: dict[str, Any] = {
    "not": {"contains": {"enum": sorted(et.value for et in EventType if et not in EVENT_STREAM)}}
}

League = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class SubscriptionFilter(BaseModel):
    """Wire form of a filter; unknown fields are refused so typos do not widen a filter."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    match_ids: (
        Annotated[
            list[Annotated[int, Field(ge=0, le=2**53)]],
            Field(min_length=1, max_length=MAX_MATCH_IDS),
        ]
        | None
    ) = None
    leagues: Annotated[list[League], Field(min_length=1, max_length=MAX_LEAGUES)] | None = None
    min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    event_types: (
        Annotated[
            list[Annotated[EventType, Field(strict=False)]],
            Field(min_length=1, max_length=15, json_schema_extra=_SUBSCRIBABLE),
        ]
        | None
    ) = None

    @field_validator("event_types")
    @classmethod
    def _publishable(cls, value: list[EventType] | None) -> list[EventType] | None:
        if value is not None:
            for et in value:
                if et not in EVENT_STREAM:
                    raise ValueError(f"{et.value} is not a subscribable event type")
        return value

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def effective_event_types(
    subscription_type: SubscriptionType | None, flt: SubscriptionFilter
) -> frozenset[EventType]:
    """The event types a subscription covers: its type's, narrowed by ``event_types``.

    Raises ``ValueError`` when neither is given or when they contradict each other.
    The result is shared between subscriptions that cover the same types.
    """
    types = None if flt.event_types is None else tuple(flt.event_types)
    return _effective_event_types(subscription_type, types)


@functools.lru_cache(maxsize=1024)
def _effective_event_types(
    subscription_type: SubscriptionType | None, event_types: tuple[EventType, ...] | None
) -> frozenset[EventType]:
    if subscription_type is None:
        if event_types is None:
            raise ValueError("give subscription_type, filters.event_types, or both")
        return frozenset(event_types)
    base = frozenset(STREAM_EVENT_TYPES[subscription_type])
    if event_types is None:
        return base
    foreign = [et.value for et in event_types if et not in base]
    if foreign:
        raise ValueError(
            f"event type(s) {', '.join(foreign)} do not belong to {subscription_type.value}"
        )
    return frozenset(event_types)


@dataclass(frozen=True, slots=True)
class EventAttributes:
    """What filters look at in an event's data. Wrongly typed attributes count as absent."""

    event_type: EventType
    match_id: int | None
    league: str | None
    confidence: float | None

    @classmethod
    def of(cls, event_type: EventType, data: Mapping[str, Any]) -> EventAttributes:
        m = data.get("match_id")
        lg = data.get("league")
        c = data.get("confidence")
        conf: float | None = None
        if type(c) is float or type(c) is int:
            conf = float(c)
            if not math.isfinite(conf):
                conf = None
        return cls(
            event_type,
            m if type(m) is int else None,
            lg if type(lg) is str else None,
            conf,
        )


_ids = itertools.count(1)


@functools.cache
def _streams_of(event_types: frozenset[EventType]) -> tuple[SubscriptionType, ...]:
    """Shared by every subscription with the same event types (an ack checks them)."""
    return tuple(sorted({EVENT_STREAM[et] for et in event_types}))


class Subscription:
    """One live subscription of one connection. ``owner`` is opaque to the index."""

    __slots__ = (
        "event_types",
        "filters",
        "id",
        "leagues",
        "match_ids",
        "min_confidence",
        "owner",
        "seq",
        "subscription_type",
    )

    def __init__(
        self,
        sub_id: str,
        owner: Any,
        subscription_type: SubscriptionType | None,
        event_types: frozenset[EventType],
        filters: SubscriptionFilter,
    ) -> None:
        self.id = sub_id
        self.owner = owner
        self.subscription_type = subscription_type
        self.event_types = event_types
        self.filters = filters
        self.match_ids = frozenset(filters.match_ids) if filters.match_ids else None
        self.leagues = frozenset(filters.leagues) if filters.leagues else None
        self.min_confidence = filters.min_confidence
        self.seq = next(_ids)

    @property
    def streams(self) -> tuple[SubscriptionType, ...]:
        """The streams this subscription's event types belong to, sorted."""
        return _streams_of(self.event_types)

    def matches(self, attrs: EventAttributes) -> bool:
        """Direct check, used outside the index (replay, snapshots)."""
        if attrs.event_type not in self.event_types:
            return False
        if self.match_ids is not None and attrs.match_id not in self.match_ids:
            return False
        if self.leagues is not None and attrs.league not in self.leagues:
            return False
        return self.min_confidence is None or (
            attrs.confidence is not None and attrs.confidence >= self.min_confidence
        )

    def describe(self) -> dict[str, Any]:
        return {
            "subscription_id": self.id,
            "subscription_type": self.subscription_type.value if self.subscription_type else None,
            "event_types": sorted(et.value for et in self.event_types),
            "filters": self.filters.to_wire(),
        }


class _Bucket:
    """All subscriptions to one event type, each filed under its most selective field."""

    __slots__ = ("any", "by_league", "by_match", "conf_keys", "conf_subs")

    def __init__(self) -> None:
        self.any: dict[Subscription, None] = {}
        self.by_match: dict[int, dict[Subscription, None]] = {}
        self.by_league: dict[str, dict[Subscription, None]] = {}
        self.conf_keys: list[tuple[float, int]] = []
        self.conf_subs: list[Subscription] = []

    def add(self, sub: Subscription) -> None:
        if sub.match_ids is not None:
            for m in sub.match_ids:
                self.by_match.setdefault(m, {})[sub] = None
        elif sub.leagues is not None:
            for lg in sub.leagues:
                self.by_league.setdefault(lg, {})[sub] = None
        elif sub.min_confidence is not None:
            key = (sub.min_confidence, sub.seq)
            i = bisect_right(self.conf_keys, key)
            self.conf_keys.insert(i, key)
            self.conf_subs.insert(i, sub)
        else:
            self.any[sub] = None

    def remove(self, sub: Subscription) -> None:
        if sub.match_ids is not None:
            for m in sub.match_ids:
                _discard(self.by_match, m, sub)
        elif sub.leagues is not None:
            for lg in sub.leagues:
                _discard(self.by_league, lg, sub)
        elif sub.min_confidence is not None:
            i = bisect_right(self.conf_keys, (sub.min_confidence, sub.seq)) - 1
            if i >= 0 and self.conf_subs[i] is sub:
                del self.conf_keys[i]
                del self.conf_subs[i]
        else:
            self.any.pop(sub, None)

    def empty(self) -> bool:
        return not (self.any or self.by_match or self.by_league or self.conf_subs)


def _discard(table: dict[Any, dict[Subscription, None]], key: Any, sub: Subscription) -> None:
    group = table.get(key)
    if group is not None:
        group.pop(sub, None)
        if not group:
            del table[key]


class SubscriptionIndex:
    """Finds the subscriptions an event matches without looking at the others.

    Each subscription is filed, per event type it covers, under its most selective
    constraint: each of its ``match_ids`` if set, else each of its ``leagues``, else in a
    list sorted by ``min_confidence``, else in the unconstrained set.

    Cost of :meth:`match` for one event: O(1) dictionary look-ups plus
    O(k + c), where k is the number of matching subscriptions and c the candidates that
    share the event's match id (or league) but fail a secondary constraint (league or
    min_confidence). Confidence-only subscriptions cost O(log n + k) via bisection.
    Subscriptions to other event types, matches or leagues are never visited, so the
    cost does not grow with the number of connections.
    add/remove: O(|match_ids| or |leagues|) dictionary operations, or O(n) list insert
    for confidence-only subscriptions (a memmove, negligible below millions).
    """

    __slots__ = ("_buckets", "_count")

    def __init__(self) -> None:
        self._buckets: dict[EventType, _Bucket] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, sub: Subscription) -> None:
        for et in sub.event_types:
            bucket = self._buckets.get(et)
            if bucket is None:
                bucket = self._buckets[et] = _Bucket()
            bucket.add(sub)
        self._count += 1

    def remove(self, sub: Subscription) -> None:
        for et in sub.event_types:
            bucket = self._buckets.get(et)
            if bucket is not None:
                bucket.remove(sub)
                if bucket.empty():
                    del self._buckets[et]
        self._count -= 1

    def match(self, attrs: EventAttributes) -> Iterator[Subscription]:
        """Yield each subscription that matches ``attrs`` exactly once."""
        for group in self.match_groups(attrs):
            yield from group

    def match_groups(self, attrs: EventAttributes) -> list[Iterable[Subscription]]:
        """:meth:`match` as groups to iterate in turn (the fan-out loop's form): the
        unconstrained subscriptions are the index's own dict, iterated without a
        per-item check or a generator step; the constrained ones come from a generator.
        Do not add or remove subscriptions while iterating."""
        bucket = self._buckets.get(attrs.event_type)
        if bucket is None:
            return []
        groups: list[Iterable[Subscription]] = []
        if bucket.any:
            groups.append(bucket.any)
        if bucket.conf_subs or bucket.by_league or bucket.by_match:
            groups.append(_constrained(bucket, attrs))
        return groups


def _constrained(bucket: _Bucket, attrs: EventAttributes) -> Iterator[Subscription]:
    conf = attrs.confidence
    if conf is not None and bucket.conf_subs:
        n = bisect_right(bucket.conf_keys, (conf, math.inf))
        yield from bucket.conf_subs[:n]
    league = attrs.league
    if league is not None:
        group = bucket.by_league.get(league)
        if group:
            for sub in group:
                mc = sub.min_confidence
                if mc is None or (conf is not None and conf >= mc):
                    yield sub
    if attrs.match_id is not None:
        group = bucket.by_match.get(attrs.match_id)
        if group:
            for sub in group:
                lgs = sub.leagues
                if lgs is not None and league not in lgs:
                    continue
                mc = sub.min_confidence
                if mc is None or (conf is not None and conf >= mc):
                    yield sub


__all__ = [
    "EventAttributes",
    "Subscription",
    "SubscriptionFilter",
    "SubscriptionIndex",
    "SubscriptionType",
    "effective_event_types",
]
