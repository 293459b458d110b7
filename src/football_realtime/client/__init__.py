"""Python client for football-realtime: reconnecting, recovering, typed.

::

    from football_realtime.client import RealtimeClient

    async with RealtimeClient("ws://localhost:8000/realtime/ws", user_id="user123") as client:
        await client.subscribe("predictions", match_ids=[1, 2, 3], min_confidence=0.7)
        async for event in client:
            print(event.event_type, event.data)

See docs/clients-python.md.
"""

from .backoff import Backoff
from .errors import (
    ClientClosed,
    FeedDisabled,
    ForbiddenError,
    InvalidFilterError,
    LimitExceededError,
    NotFoundError,
    RealtimeClientError,
    ReconnectFailed,
    RequestError,
    RequestTimeout,
    TerminalCloseError,
    UnavailableError,
)
from .models import ClientState, ClientStats, Event
from .realtime import RealtimeClient
from .subscription import RecoveryFailed, Subscription

__all__ = [
    "Backoff",
    "ClientClosed",
    "ClientState",
    "ClientStats",
    "Event",
    "FeedDisabled",
    "ForbiddenError",
    "InvalidFilterError",
    "LimitExceededError",
    "NotFoundError",
    "RealtimeClient",
    "RealtimeClientError",
    "ReconnectFailed",
    "RecoveryFailed",
    "RequestError",
    "RequestTimeout",
    "Subscription",
    "TerminalCloseError",
    "UnavailableError",
]
