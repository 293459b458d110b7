"""Tier views: how a published event looks to each tier (docs/security.md).

The hub renders each event at most once per view (a tier name) and sends the same
bytes to every connection of that view; a view that may not receive the event gets
nothing. Connections whose tier is unrestricted have no view and get the event as
published.
"""

from __future__ import annotations

from collections.abc import Hashable

from ..brokers.base import PublishedEvent
from ..core.permissions import TierPolicy
from .connection import Encoded


class TierViews:
    def __init__(self, policy: TierPolicy) -> None:
        self.policy = policy

    def render(self, ev: PublishedEvent, view: Hashable) -> Encoded | None:
        """The bytes tier ``view`` receives for ``ev``, or None."""
        tier = self.policy.get(str(view))
        if tier is None:  # a tier removed from the policy receives nothing
            return None
        out = self.policy.render(tier, ev.event_type, ev.payload)
        return None if out is None else Encoded(out)


__all__ = ["TierViews"]
