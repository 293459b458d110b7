"""football-realtime: real-time push of football events over WebSocket."""

from ._version import __version__
from .app import Realtime, create_app
from .config import Settings
from .core.close_codes import CloseCode
from .core.events import EventType, RealtimeEvent, SubscriptionType
from .core.subscriptions import SubscriptionFilter

__all__ = [
    "CloseCode",
    "EventType",
    "Realtime",
    "RealtimeEvent",
    "Settings",
    "SubscriptionFilter",
    "SubscriptionType",
    "__version__",
    "create_app",
]
