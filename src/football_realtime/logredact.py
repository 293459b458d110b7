"""Keep tokens and terminal control characters out of logs.

uvicorn logs every WebSocket handshake and HTTP request with its query string, and
the seed's clients put their JWT there (``?token=...``). :class:`RedactingFilter`
rewrites each record before any handler formats it:

* the value of ``token`` / ``access_token`` / ``jwt`` / ``session_id`` query parameters
  (a durable session id is a bearer secret for anonymous sessions) and of ``Bearer``
  credentials becomes ``[REDACTED]``;
* control characters in the arguments (a path, a User-Agent, an Origin sent by a
  client) are escaped, so a client cannot forge log lines or send terminal escapes.

:func:`install` puts it on the root logger's and uvicorn's handlers and loggers;
``football-realtime serve`` calls it after uvicorn has configured logging. Call it
again after replacing handlers.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[REDACTED]"

_QUERY_TOKEN = re.compile(
    r"(?i)((?:^|[?&;\s\"'])(?:token|access_token|jwt|session_id)=)[^&;\s\"']*"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f]")

LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "football_realtime")


def redact(text: str) -> str:
    """``text`` with token values replaced by ``[REDACTED]``."""
    if "=" in text:
        text = _QUERY_TOKEN.sub(r"\1" + REDACTED, text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(r"\1" + REDACTED, text)
    return text


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _escape(redact(value))
    if isinstance(value, bytes):
        return _clean(value.decode("latin-1"))
    return value


class RedactingFilter(logging.Filter):
    """Redacts tokens in the message and arguments; escapes control characters in
    arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_clean(a) for a in args)
        elif isinstance(args, dict):
            record.args = {k: _clean(v) for k, v in args.items()}
        return True


def install(filt: logging.Filter | None = None) -> logging.Filter:
    """Attach the filter to the service's loggers and their handlers (idempotent)."""
    f = filt or _shared
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(x, RedactingFilter) for x in logger.filters):
            logger.addFilter(f)
        for handler in logger.handlers:
            if not any(isinstance(x, RedactingFilter) for x in handler.filters):
                handler.addFilter(f)
    return f


_shared = RedactingFilter()

__all__ = ["REDACTED", "RedactingFilter", "install", "redact"]
