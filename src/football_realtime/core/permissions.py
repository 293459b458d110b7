"""Tier policy: which event types a tier may receive and which fields it may see. No I/O.

The seed's rule (权限控制): the ``free`` tier receives only ``prediction_created`` and
``match_started``; paid tiers receive everything. Sensitive-data filtering (敏感数据过滤):
fields listed for a tier (default: ``expected_value`` and ``strategy`` of predictions for
``free``) are removed from the payloads that tier receives. Timeliness (``delay_seconds``,
``min_interval_seconds``, :mod:`.timeliness`): a tier may get event types late or thinned. The configuration shape and
its default live in ``config.py`` (REALTIME_TIERS).

The policy is enforced twice:

* at subscribe time, :meth:`TierPolicy.narrow` refuses an explicit request for a
  forbidden event type and narrows a broader one to what the tier may receive;
* at delivery, :meth:`TierPolicy.render` returns ``None`` for a forbidden event and
  the payload without hidden fields otherwise, so a tier change or a new event type
  never leaks. The hub calls it once per (event, tier), not per connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import LocalError
from .events import EVENT_STREAM, STREAM_EVENT_TYPES, EventType, SubscriptionType
from .timeliness import Timeliness


class Forbidden(LocalError):
    """A subscription asks for event types its tier may not receive."""

    def __init__(self, tier: str, event_types: Iterable[EventType]) -> None:
        self.tier = tier
        self.event_types = sorted(et.value for et in event_types)
        super().__init__(
            f"tier {tier!r} may not receive {', '.join(self.event_types)}"
            if self.event_types
            else f"tier {tier!r} may not receive any event of this subscription"
        )


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    #: None: every event type.
    event_types: frozenset[EventType] | None
    #: Top-level ``data`` fields removed, per event type.
    hidden_fields: Mapping[EventType, frozenset[str]]
    #: Delays and thinning (:mod:`.timeliness`).
    timeliness: Timeliness = field(default_factory=Timeliness)

    @property
    def unrestricted(self) -> bool:
        """Receives every event exactly as published, when published (its connections
        need no view)."""
        return self.event_types is None and not self.hidden_fields and not self.timeliness.timed

    def may_receive(self, event_type: EventType) -> bool:
        return self.event_types is None or event_type in self.event_types


class TierPolicy:
    """The configured tiers. Unknown tier names are refused, never guessed."""

    def __init__(self, tiers: Mapping[str, Tier], default_tier: str) -> None:
        if default_tier not in tiers:
            raise ValueError(f"default tier {default_tier!r} is not among the tiers")
        self.tiers = dict(tiers)
        self.default_tier = default_tier

    @classmethod
    def from_config(
        cls, config: Mapping[str, Mapping[str, Any]], default_tier: str = "free"
    ) -> TierPolicy:
        """Build from the REALTIME_TIERS shape; raises ``ValueError`` naming the bad entry."""
        tiers: dict[str, Tier] = {}
        for name, spec in config.items():
            if not isinstance(spec, Mapping):
                raise ValueError(f"tier {name!r}: expected an object")
            extra = set(spec) - {
                "event_types",
                "hidden_fields",
                "delay_seconds",
                "min_interval_seconds",
            }
            if extra:
                raise ValueError(f"tier {name!r}: unknown key(s) {sorted(extra)}")
            raw_types = spec.get("event_types")
            types: frozenset[EventType] | None = None
            if raw_types is not None:
                types = frozenset(_event_type(name, t) for t in raw_types)
            hidden: dict[EventType, frozenset[str]] = {}
            for key, fields in (spec.get("hidden_fields") or {}).items():
                if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
                    raise ValueError(f"tier {name!r}: hidden_fields.{key} must be a list of names")
                for et in _event_types_of(name, key):
                    hidden[et] = hidden.get(et, frozenset()) | frozenset(fields)
            timeliness = Timeliness.from_config(
                name, spec.get("delay_seconds"), spec.get("min_interval_seconds")
            )
            tiers[name] = Tier(name, types, {k: v for k, v in hidden.items() if v}, timeliness)
        return cls(tiers, default_tier)

    def get(self, name: str) -> Tier | None:
        return self.tiers.get(name)

    def narrow(
        self,
        tier: Tier,
        requested: frozenset[EventType],
        explicit: bool,
    ) -> frozenset[EventType]:
        """The event types a subscription may cover for ``tier``.

        ``explicit``: the client listed the event types itself (``filters.event_types``);
        any forbidden one is refused. Otherwise (a whole stream) the set is narrowed, and
        refused only when nothing is left.
        """
        if tier.event_types is None:
            return requested
        allowed = requested & tier.event_types
        if explicit and allowed != requested:
            raise Forbidden(tier.name, requested - allowed)
        if not allowed:
            raise Forbidden(tier.name, requested)
        return allowed

    def render(self, tier: Tier, event_type: EventType, payload: bytes) -> bytes | None:
        """The bytes ``tier`` receives for a published envelope, or None if none.

        Returns ``payload`` itself when nothing is hidden from this event.
        """
        if not tier.may_receive(event_type):
            return None
        hidden = tier.hidden_fields.get(event_type)
        if not hidden:
            return payload
        envelope = orjson.loads(payload)
        data = envelope.get("data")
        if not isinstance(data, dict) or hidden.isdisjoint(data):
            return payload
        envelope["data"] = {k: v for k, v in data.items() if k not in hidden}
        return orjson.dumps(envelope)

    def describe(self, tier: Tier) -> dict[str, Any]:
        return {
            "tier": tier.name,
            "event_types": None
            if tier.event_types is None
            else sorted(et.value for et in tier.event_types),
            "hidden_fields": {
                et.value: sorted(fields) for et, fields in sorted(tier.hidden_fields.items())
            },
            **tier.timeliness.describe(),
        }


def _event_type(tier: str, raw: Any) -> EventType:
    try:
        et = EventType(raw)
    except ValueError:
        raise ValueError(f"tier {tier!r}: unknown event type {raw!r}") from None
    if et not in EVENT_STREAM:
        raise ValueError(f"tier {tier!r}: {et.value} is not a published event type")
    return et


def _event_types_of(tier: str, key: str) -> tuple[EventType, ...]:
    if key in SubscriptionType.__members__.values():
        return STREAM_EVENT_TYPES[SubscriptionType(key)]
    return (_event_type(tier, key),)


__all__ = ["Forbidden", "Tier", "TierPolicy"]
