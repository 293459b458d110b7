"""The client's durable session: its id, what the application took, acks, the store.

With a durable session (``RealtimeClient(session_id="new" | <id>, session_store=PATH)``,
docs/clients-python.md) the server keeps the client's subscriptions and acknowledged
positions between connections and process runs (docs/protocol.md, Sessions).
:class:`ClientSession` is the client's half:

* **taken**: an event counts as processed once the application has *taken* it: every
  handler returned, and (when the client's ``async for`` feed is being read) the loop
  came back for the next item. Per stream, the newest offset taken is the position.
* **acks**: taken positions are acknowledged to the server coalesced: once the
  application has taken nothing more for 250 ms, at the latest 1 s after the first
  unacknowledged event, or at once when 100 taken events are unacknowledged
  (:meth:`run`). So never more often than every 250 ms but at 100 events; a quiet
  stream is acknowledged 250 ms after its last event, a busy one once a second (the
  server writes acknowledged positions to the broker once a second anyway).
* **store**: with ``session_store`` the session id and the taken positions are written
  to that file (atomically: a temporary file renamed over it) each time an event is
  taken, before the application gets the next one, so a process killed at any point
  restarts knowing exactly what its application processed. At start the positions
  seed the duplicate suppression: what the server replays again (everything after its
  acknowledged position, which trails the taken one) is dropped by offset.
* **restore**: on a resumed session the server re-subscribes the session's
  subscriptions and announces each (``user_subscription_changed`` with ``restored``).
  The client adopts an announced subscription for a ``subscribe`` of the same type and
  filters instead of sending a new one (:meth:`claim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from ..core.events import EVENT_STREAM, SubscriptionType
from ..core.messages import SESSION_ID
from ..core.subscriptions import SubscriptionFilter, effective_event_types
from .connection import Connection
from .lifecycle import Lifecycle
from .models import Event
from .recovery import StreamTracker, positions
from .requests import Lost

log = logging.getLogger("football_realtime.client")

#: An ack goes once the application has taken nothing more for this long (seconds)...
ACK_INTERVAL = 0.25
#: ...and at the latest this long after the first unacknowledged taken event...
ACK_MAX_DELAY = 1.0
#: ...or at once when this many taken events are unacknowledged.
ACK_BATCH = 100

Positions = dict[str, tuple[str, int]]


def is_durable_id(value: str | None) -> bool:
    """Whether ``session_id`` asks for a durable session (``new`` or a session id); any
    other value is the label it always was."""
    return value == "new" or (value is not None and SESSION_ID.check(value))


class SessionStore:
    """A JSON file holding the session id and the positions the application took."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> tuple[str | None, Positions]:
        """``(session_id, positions)``; nothing when the file does not exist. A file that
        cannot be read is an error (it is never overwritten silently)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, {}
        try:
            obj = orjson.loads(raw)
            sid = obj.get("session_id")
            if sid is not None and not SESSION_ID.check(sid):
                raise ValueError("session_id")
            got = positions(obj.get("positions") or {})
        except (orjson.JSONDecodeError, AttributeError, ValueError) as exc:
            raise ValueError(f"session store {self.path} cannot be read: {exc}") from None
        return sid, got

    def save(self, session_id: str | None, taken: Positions) -> None:
        """Write atomically: a crash leaves the old file or the new one, never a mix."""
        body = orjson.dumps(
            {
                "session_id": session_id,
                "positions": {s: {"epoch": e, "offset": o} for s, (e, o) in taken.items()},
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".session-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _norm_filters(filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    try:
        return SubscriptionFilter.model_validate(dict(filters or {})).to_wire()
    except ValueError:
        return None


class ClientSession:
    """One client's durable session (None of it exists without one: see ``enabled``)."""

    def __init__(
        self,
        session_id: str | None,
        store: SessionStore | None,
        tracker: StreamTracker,
    ) -> None:
        self.enabled = store is not None or is_durable_id(session_id)
        self.store = store
        self._tracker = tracker
        stored_id, taken = store.load() if store is not None else (None, {})
        #: The session's id once known (from the store, the option, or the welcome).
        self.id: str | None = session_id if session_id not in (None, "new") else stored_id
        if not self.enabled:
            self.id = None
        #: Per stream, the newest (epoch, offset) the application took.
        self.taken: Positions = dict(taken)
        #: Whether positions came from the store (a previous run).
        self.from_store = bool(taken)
        tracker.restore(taken)
        self._pending: Positions = {}
        self._unacked = 0
        #: When the application last took an event (time.monotonic()).
        self._last_taken = 0.0
        self._wake = asyncio.Event()
        #: The last ``connection_status.session`` of the server.
        self.info: dict[str, Any] = {}

    # -- the handshake and the welcome -----------------------------------------------

    def params(self) -> dict[str, str | None]:
        """The handshake's session parameters."""
        if not self.enabled:
            return {}
        if self.id is None:
            return {"session_id": "new", "resume": None}
        return {"session_id": self.id, "resume": "1"}

    def welcome(self, info: Any) -> None:
        """``connection_status.session`` of a new connection."""
        if not self.enabled or not isinstance(info, Mapping):
            return
        self.info = dict(info)
        sid = info.get("id")
        if isinstance(sid, str) and sid != self.id:
            self.id = sid
            self._persist()

    @property
    def resumed(self) -> bool:
        return self.info.get("resumed") is True

    # -- restored subscriptions --------------------------------------------------------

    def restored(self, conn: Connection, data: Mapping[str, Any]) -> None:
        """A ``user_subscription_changed`` announcing a subscription this connection's
        session restored: keep it for :meth:`claim`, and take its stream positions."""
        sub = data.get("subscription")
        streams = data.get("streams")
        if not isinstance(sub, Mapping) or not isinstance(streams, Mapping):
            return
        self._tracker.on_ack(streams)
        conn.restored.append(dict(data))

    def claim(
        self, conn: Connection, subscription_type: str | None, filters: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The restored subscription of ``conn`` with this type and filters, taken out
        of the pool (None: subscribe anew)."""
        want = _norm_filters(filters)
        for i, entry in enumerate(conn.restored):
            sub = entry["subscription"]
            if sub.get("subscription_type") == subscription_type and (
                _norm_filters(sub.get("filters")) == want
            ):
                return conn.restored.pop(i)
        return None

    def streams_of(self, sub: Any) -> tuple[str, ...]:
        """Before its first ack, the streams a subscription will cover, when a previous
        run left positions for them (a ``subscribe`` then recovers from those)."""
        if not self.from_store:
            return ()
        try:
            st = SubscriptionType(sub.subscription_type) if sub.subscription_type else None
            types = effective_event_types(st, SubscriptionFilter.model_validate(sub.filters))
        except ValueError:
            return ()
        names = sorted({EVENT_STREAM[t].value for t in types})
        return tuple(n for n in names if n in self.taken)

    # -- taken events and acks ---------------------------------------------------------

    def took(self, item: object) -> None:
        """The application has taken ``item``: record its position, persist, ack soon."""
        if not self.enabled or not isinstance(item, Event):
            return
        stream, offset = item.stream, item.offset
        if stream is None or offset is None:
            return
        pos = self._tracker.get(stream)
        if pos is None:
            return
        prev = self.taken.get(stream)
        if prev is not None and prev[0] == pos.epoch and prev[1] >= offset:
            return
        self.taken[stream] = (pos.epoch, offset)
        self._pending[stream] = (pos.epoch, offset)
        self._unacked += 1
        self._last_taken = time.monotonic()
        self._persist()
        if self._unacked >= ACK_BATCH or self._unacked == 1:
            self._wake.set()

    def _persist(self) -> None:
        if self.store is not None:
            try:
                self.store.save(self.id, self.taken)
            except OSError as exc:
                log.warning("could not write the session store %s: %s", self.store.path, exc)

    async def run(self, life: Lifecycle) -> None:
        """Send acks: ACK_INTERVAL after the last taken event, ACK_MAX_DELAY after the
        first unacknowledged one at the latest, or at once at ACK_BATCH; on the
        connection that is open (else they wait for the next)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._coalesce(time.monotonic() + ACK_MAX_DELAY)
            # No open connection to take them: try again on the ack timer (a
            # connection that is closing may still look established for a moment).
            while not await self.flush(life):  # noqa: ASYNC110
                await asyncio.sleep(ACK_INTERVAL)

    async def _coalesce(self, deadline: float) -> None:
        """Wait until the application has taken nothing for ACK_INTERVAL, ``deadline``
        passed or ACK_BATCH events are unacknowledged."""
        while self._unacked < ACK_BATCH:
            wait = min(self._last_taken + ACK_INTERVAL, deadline) - time.monotonic()
            if wait <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    async def flush(self, life: Lifecycle) -> bool:
        """Send what is unacknowledged now; False when no connection is open to take it."""
        if not self._pending:
            return True
        conn = life.conn
        if conn is None or not conn.established:
            return life.closing
        pending, self._pending = self._pending, {}
        self._unacked = 0
        body = {s: {"epoch": e, "offset": o} for s, (e, o) in pending.items()}
        try:
            await conn.channel.post("ack", {"positions": body})
        except Lost:
            for s, p in pending.items():
                self._pending.setdefault(s, p)
            return False
        return True


__all__ = [
    "ACK_BATCH",
    "ACK_INTERVAL",
    "ACK_MAX_DELAY",
    "ClientSession",
    "SessionStore",
    "is_durable_id",
]
