"""Exceptions raised by :mod:`football_realtime.client`.

::

    RealtimeClientError
    ├── RequestError            the server answered a request with ``error`` (``.code``)
    │   ├── InvalidFilterError      invalid_filter, unknown_subscription_type
    │   ├── ForbiddenError          forbidden, unauthorized
    │   ├── LimitExceededError      limit_exceeded, rate_limited
    │   ├── NotFoundError           not_found
    │   └── UnavailableError        unavailable (the broker is unreachable; retry later)
    ├── RequestTimeout          no reply within ``request_timeout`` (also a TimeoutError)
    ├── ClientClosed            the client is closed; nothing more will arrive
    │   ├── TerminalCloseError      the server closed with a code that forbids retrying
    │   └── ReconnectFailed         ``max_reconnect_attempts`` consecutive attempts failed
    └── FeedDisabled            an iterator was read after its unread buffer overflowed

Errors in the first branch are per request: the connection stays usable. The
``ClientClosed`` family ends the client: iterators raise it once what they hold
is consumed, and pending requests fail with it.
"""

from __future__ import annotations


class RealtimeClientError(Exception):
    """Root of every exception the client raises."""


class RequestError(RealtimeClientError):
    """The server refused a request. ``code`` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str, request_type: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_type = request_type


class InvalidFilterError(RequestError):
    pass


class ForbiddenError(RequestError):
    pass


class LimitExceededError(RequestError):
    pass


class NotFoundError(RequestError):
    pass


class UnavailableError(RequestError):
    pass


_BY_CODE: dict[str, type[RequestError]] = {
    "unavailable": UnavailableError,
    "invalid_filter": InvalidFilterError,
    "unknown_subscription_type": InvalidFilterError,
    "forbidden": ForbiddenError,
    "unauthorized": ForbiddenError,
    "limit_exceeded": LimitExceededError,
    "rate_limited": LimitExceededError,
    "not_found": NotFoundError,
}


def request_error(code: str, message: str, request_type: str | None = None) -> RequestError:
    """The exception for an ``error`` reply, typed by its code."""
    return _BY_CODE.get(code, RequestError)(code, message, request_type)


class RequestTimeout(RealtimeClientError, TimeoutError):
    """No reply arrived in time (the connection may have dropped meanwhile)."""


class ClientClosed(RealtimeClientError):
    """The client is closed (by the application, or for one of the subclasses' reasons)."""


class TerminalCloseError(ClientClosed):
    """The server closed the connection with a code that says not to retry unchanged
    (``core.close_codes.should_reconnect`` is False), e.g. 4501 unauthorized."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"server closed the connection with {code} {reason!r}; not reconnecting")
        self.code = code
        self.reason = reason


class ReconnectFailed(ClientClosed):
    """``attempts`` consecutive connection attempts failed; the client gave up."""

    def __init__(self, attempts: int, last_error: BaseException | None) -> None:
        detail = f": {last_error}" if last_error is not None else ""
        super().__init__(f"gave up after {attempts} failed connection attempt(s){detail}")
        self.attempts = attempts
        self.last_error = last_error


class FeedDisabled(RealtimeClientError):
    """This iterator was never read while its buffer filled up, so buffering for it
    was switched off to keep the connection flowing. Iterate from the start, or use
    handlers (``client.on``)."""
