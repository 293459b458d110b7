"""The root of every exception the server raises on purpose, in two branches.

::

    RealtimeError
    ├── LocalError              the request or the peer is at fault; retrying it unchanged fails again
    │   ├── ProtocolError           core/protocol.py: a client message is refused (``error`` reply)
    │   ├── EventValidationError    core/events.py: a published event is refused (REST 422)
    │   ├── Forbidden               core/permissions.py: the tier may not receive those types
    │   ├── AuthError               auth.py: a token is refused
    │   ├── Refused                 security.py: a connection may not open or go on (close code)
    │   ├── QueryError              transport.py: a bad query parameter on the WebSocket URL
    │   └── _TooLarge               edges/body_limit.py: an HTTP body over the limit (413)
    └── RemoteError             something the server depends on failed; the same request may
        │                       succeed later (503 / ``unavailable``, with Retry-After)
        └── BrokerUnavailable       brokers/base.py: the broker (Redis) is unreachable

The split mirrors the client's (``client/errors.py``: per-request refusals vs the
connection being gone): a caller that only needs to know whether to retry catches
:class:`RemoteError`; one that reports bad input catches :class:`LocalError`. Each class
keeps the builtin base it had before (``ValueError``, ``RuntimeError``), so existing
``except ValueError`` clauses still see them. Pure: no imports beyond the standard library.
"""

from __future__ import annotations


class RealtimeError(Exception):
    """Root of every exception the server raises on purpose."""


class LocalError(RealtimeError):
    """The request, message or peer is at fault: answer it (4xx, ``error`` reply, close
    code); retrying unchanged fails again."""


class RemoteError(RealtimeError):
    """A dependency (the broker) failed: nothing changed; retry after a short backoff."""


__all__ = ["LocalError", "RealtimeError", "RemoteError"]
