"""Structured logs: text or JSON lines, with connection, user and correlation ids.

Who is talking about what comes from context variables, so code that logs does
not have to pass ids around:

* :func:`bind_connection` in a connection's task (the WebSocket endpoint): every
  line logged while handling that connection carries its ``connection_id`` and
  ``user_id`` (read at log time, so a user authenticated later shows up).
* :func:`bind_correlation_id`: the id of the request or event being handled (the
  ``X-Correlation-ID`` / ``X-Request-ID`` header of a request or WebSocket
  upgrade, or an event's ``correlation_id`` while it is published).
* :data:`CURRENT_EVENT` is set while an event is fanned out; its correlation id is
  read from the event only when a line is actually logged.

An explicit ``extra={"connection_id": ...}`` wins over the context (for code that
logs about a connection from outside its task, e.g. a slow consumer found during
fan-out).

:func:`configure_logging` installs one handler on the root logger and routes
uvicorn's loggers through it; :func:`handler_filters` is the one place where
filters applied to every line (context, redaction) are listed.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar, Token
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

from .core.events import utc_second

if TYPE_CHECKING:
    from .config import Settings

CONTEXT_FIELDS = ("connection_id", "user_id", "correlation_id")
_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class HasIdentity(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...


class _Pending:
    """A connection known only by id (before the handshake is finished)."""

    __slots__ = ("id", "user_id")

    def __init__(self, conn_id: str) -> None:
        self.id = conn_id
        self.user_id: str | None = None


_CONNECTION: ContextVar[HasIdentity | None] = ContextVar("realtime_connection", default=None)
_CORRELATION: ContextVar[str | None] = ContextVar("realtime_correlation_id", default=None)
#: The published event being fanned out (a ``PublishedEvent``), if any.
CURRENT_EVENT: ContextVar[Any] = ContextVar("realtime_event", default=None)


def bind_connection(conn: HasIdentity | str) -> None:
    """Tag every later line of the current task (and tasks it starts) with ``conn``.

    Call it in the connection's own task: the binding ends with the task.
    """
    _CONNECTION.set(_Pending(conn) if isinstance(conn, str) else conn)


def bind_correlation_id(value: str | None) -> Token[str | None]:
    return _CORRELATION.set(value)


def reset_correlation_id(token: Token[str | None]) -> None:
    _CORRELATION.reset(token)


def current_correlation_id() -> str | None:
    return _CORRELATION.get()


def clean_id(value: str | None) -> str | None:
    """A correlation id as received in a header: printable ASCII, at most 128 chars."""
    if value is None:
        return None
    value = value.strip()
    return value if _ID_RE.match(value) else None


def _event_fields(ev: Any) -> dict[str, Any]:
    try:
        envelope = orjson.loads(ev.payload)
    except (AttributeError, orjson.JSONDecodeError):
        return {}
    return {
        "correlation_id": envelope.get("correlation_id"),
        "event_type": envelope.get("event_type"),
        "stream": envelope.get("stream"),
        "offset": envelope.get("offset"),
    }


class ContextFilter(logging.Filter):
    """Adds ``connection_id``, ``user_id`` and ``correlation_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        d = record.__dict__
        if "connection_id" not in d:
            conn = _CONNECTION.get()
            d["connection_id"] = conn.id if conn is not None else None
            if "user_id" not in d:
                d["user_id"] = conn.user_id if conn is not None else None
        elif "user_id" not in d:
            d["user_id"] = None
        ev = CURRENT_EVENT.get()
        if ev is not None:  # the event's own fields, parsed only when a line is logged
            for k, v in _event_fields(ev).items():
                if d.get(k) is None:
                    d[k] = v
        if d.get("correlation_id") is None:
            d["correlation_id"] = _CORRELATION.get()
        return True


# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
    *CONTEXT_FIELDS,
}
_ACCESS_FIELDS = ("client_addr", "method", "path", "http_version", "status_code")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}


def _timestamp(record: logging.LogRecord) -> str:
    return utc_second(int(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the three ids, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k in CONTEXT_FIELDS:
            out[k] = record.__dict__.get(k)
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == len(_ACCESS_FIELDS)
        ):
            out.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``ts level logger: message key=value ...``, control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record),
            f"{record.levelname:<7}",
            f"{record.name}:",
            _escape(record.getMessage()),
        ]
        fields = {k: record.__dict__.get(k) for k in CONTEXT_FIELDS}
        fields.update(_extras(record))
        parts.extend(f"{k}={_escape(str(v))}" for k, v in fields.items() if v is not None)
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _escape(text: str) -> str:
    if text.isprintable():  # nothing _CONTROL_RE matches is printable: the common case
        return text
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def handler_filters(settings: Settings) -> list[logging.Filter]:
    """Every filter applied to every log line, in order. Add new ones (e.g. token
    redaction in access-log paths) here, so all handlers get them."""
    return [ContextFilter()]


def make_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    for f in handler_filters(settings):
        handler.addFilter(f)
    handler.__dict__["_football_realtime"] = True
    return handler


CORRELATION_HEADERS = (b"x-correlation-id", b"x-request-id")


class CorrelationIdMiddleware:
    """Binds the ``X-Correlation-ID`` (or ``X-Request-ID``) of an HTTP request or a
    WebSocket upgrade to everything logged while it is handled, the access-log
    line and a connection's lines included. Pure ASGI, so the binding happens in
    the task that runs the endpoint."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            cid = correlation_id_of(scope)
            if cid is not None:
                token = _CORRELATION.set(cid)
                try:
                    await self.app(scope, receive, send)
                finally:
                    _CORRELATION.reset(token)
                return
        await self.app(scope, receive, send)


def correlation_id_of(scope: Any) -> str | None:
    """The request's ``X-Correlation-ID`` (or ``X-Request-ID``), if valid."""
    for name, value in scope.get("headers", ()):
        if name in CORRELATION_HEADERS:
            cid = clean_id(value.decode("latin-1"))
            if cid is not None:
                return cid
    return None


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Log through one handler on the root logger, uvicorn's loggers included.

    Replaces a handler installed by an earlier call (not anybody else's). Run
    uvicorn with ``log_config=None`` afterwards so it keeps this setup.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.__dict__.get("_football_realtime"):
            root.removeHandler(h)
    handler = make_handler(settings, stream)
    root.addHandler(handler)
    level = logging.getLevelName(settings.log_level.upper())
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
        lg.setLevel(logging.NOTSET)
        lg.disabled = False
    access = logging.getLogger("uvicorn.access")
    if not settings.access_log:
        access.propagate = False
    # None of our formats prints the caller (file, line, function). Finding it walks
    # the stack, which in a connection's task keeps a frame object alive for as long as
    # the connection lives (~360 bytes each, measured in docs/performance.md).
    # Setting _srcfile to None is the logging module's documented switch for that.
    logging._srcfile = None
    # Nor the process: collecting it is a ``getpid`` system call per record (two
    # log lines per connection), several microseconds each on a VM. The documented
    # switch for that is logProcesses (and logMultiprocessing for processName).
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return handler
