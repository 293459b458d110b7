"""Which events may be conflated (latest wins) while a connection is backed up.

Only state snapshots whose newer value makes the older one useless: the current odds
of one bookmaker for one match, the system status, one period's analytics. Goals,
match status changes, predictions, alerts and everything else are never conflated or
dropped: a client that cannot keep up with those is disconnected (4001) and recovers
the gap on reconnect.

``odds_updated`` is keyed by match *and* bookmaker: odds from two bookmakers are two
values, and keeping only the newest of them would lose the other's current odds.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from .events import EventType

CONFLATED_EVENT_TYPES = frozenset(
    {EventType.ODDS_UPDATED, EventType.SYSTEM_STATUS, EventType.ANALYTICS_UPDATED}
)


def conflation_key(event_type: EventType, data: Mapping[str, Any]) -> Hashable | None:
    """The key under which a newer event replaces a queued one; None: never conflated."""
    if event_type is EventType.ODDS_UPDATED:
        return (event_type, data.get("match_id"), data.get("bookmaker"))
    if event_type is EventType.SYSTEM_STATUS:
        return event_type
    if event_type is EventType.ANALYTICS_UPDATED:
        return (event_type, data.get("period"))
    return None
