"""The embedded broker: one process, no dependencies. History lives as long as the process.

Being one process is checked: when started in a worker that shares its listening socket
with other processes (``uvicorn --workers N``, ``gunicorn -w N``), it refuses
(``sole_process.claim_listeners``, issue 15 item 6).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..core.events import EventType, SubscriptionType
from ..sole_process import ListenerClaim, SharedListener, claim_listeners
from .base import CriticalRetention, Deliver, PublishedEvent, PublishResult, Reset

log = logging.getLogger("football_realtime.broker")
IDEMPOTENCY_WINDOW = 300.0
SNAPSHOT_KEYS = 10_000  # (event_type, match) entries kept per stream


class MemoryBroker:
    name = "memory"

    def __init__(
        self,
        *,
        history_size: int,
        history_ttl: float,
        clock: Callable[[], float] = time.monotonic,
        critical: CriticalRetention | None = None,
    ) -> None:
        """``clock``: the time sessions expire by (a test may pass a fake one);
        ``critical``: the events kept beyond the history (KeepsCritical)."""
        self.history_size = history_size
        self.critical = critical if critical is not None else CriticalRetention()
        #: Per stream, its critical events (a second, longer bounded deque).
        self._critical: dict[SubscriptionType, deque[PublishedEvent]] = {
            st: deque(maxlen=self.critical.size) for st in SubscriptionType
        }
        self.clock = clock
        #: Durable sessions (StoresSessions): id -> (expires at, owner, state), and each
        #: owner's session ids (an expired one leaves when next looked at).
        self._sessions: dict[str, tuple[float, str | None, bytes]] = {}
        self._owned: dict[str, set[str]] = {}
        self.history_ttl = history_ttl
        self._deliver: Deliver | None = None
        self._claim: ListenerClaim | None = None
        self._offsets: dict[SubscriptionType, int] = dict.fromkeys(SubscriptionType, 0)
        self._epoch = secrets.token_hex(6)
        self._history: dict[SubscriptionType, deque[PublishedEvent]] = {
            st: deque(maxlen=history_size) for st in SubscriptionType
        }
        self._idem: OrderedDict[str, tuple[float, PublishResult]] = OrderedDict()
        self._latest: dict[
            SubscriptionType, OrderedDict[tuple[str, int | None], PublishedEvent]
        ] = {st: OrderedDict() for st in SubscriptionType}

    async def start(self, deliver: Deliver, on_reset: Reset | None = None) -> None:
        """Raises :class:`~football_realtime.sole_process.SharedListener` (with what to
        do) in one of several worker processes that serve the same socket."""
        try:
            self._claim = claim_listeners()
        except SharedListener as exc:
            log.error("%s", exc)
            raise
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    async def publish(
        self, envelope: dict[str, Any], stream: SubscriptionType, idempotency_key: str | None
    ) -> PublishResult:
        now = time.time()
        if idempotency_key is not None:
            self._expire_idem(now)
            seen = self._idem.get(idempotency_key)
            if seen is not None:
                r = seen[1]
                return PublishResult(r.stream, r.offset, r.epoch, duplicate=True)
        offset = self._offsets[stream] + 1
        self._offsets[stream] = offset
        envelope["stream"] = stream.value
        envelope["offset"] = offset
        ev = PublishedEvent(
            stream=stream,
            offset=offset,
            event_type=EventType(envelope["event_type"]),
            data=envelope["data"],
            payload=orjson.dumps(envelope),
            published_at=now,
        )
        self._history[stream].append(ev)
        if ev.event_type in self.critical.types:
            self._critical[stream].append(ev)
        latest = self._latest[stream]
        m = ev.data.get("match_id")
        key = (ev.event_type.value, m if type(m) is int else None)
        latest[key] = ev
        latest.move_to_end(key)
        if len(latest) > SNAPSHOT_KEYS:
            latest.popitem(last=False)
        result = PublishResult(stream, offset, self._epoch)
        if idempotency_key is not None:
            self._idem[idempotency_key] = (now, result)
        if self._deliver is not None:
            self._deliver(ev)
        return result

    def _expire_idem(self, now: float) -> None:
        while self._idem:
            key, (ts, _) = next(iter(self._idem.items()))
            if now - ts < IDEMPOTENCY_WINDOW:
                break
            del self._idem[key]

    async def position(self, stream: SubscriptionType) -> tuple[str, int]:
        return self._epoch, self._offsets[stream]

    async def history(self, stream: SubscriptionType, after: int) -> list[PublishedEvent] | None:
        events = self._history[stream]
        cutoff = time.time() - self.history_ttl
        kept = [ev for ev in events if ev.published_at >= cutoff]
        top = self._offsets[stream]
        if after >= top:
            return []
        if not kept or kept[0].offset > after + 1:
            return None
        return [ev for ev in kept if ev.offset > after]

    async def history_tail(self, stream: SubscriptionType, after: int) -> list[PublishedEvent]:
        cutoff = time.time() - self.history_ttl
        return [
            ev for ev in self._history[stream] if ev.offset > after and ev.published_at >= cutoff
        ]

    async def critical_history(self, stream: SubscriptionType, after: int) -> list[PublishedEvent]:
        cutoff = time.time() - self.critical.ttl
        kept = self._critical[stream]
        while kept and kept[0].published_at < cutoff:
            kept.popleft()
        return [ev for ev in kept if ev.offset > after]

    async def snapshot(self, stream: SubscriptionType) -> list[PublishedEvent]:
        return sorted(self._latest[stream].values(), key=lambda ev: ev.offset)

    async def healthy(self) -> bool:
        return True

    # -- durable sessions (StoresSessions) -------------------------------------------

    def _live_session(self, session_id: str) -> tuple[float, str | None, bytes] | None:
        entry = self._sessions.get(session_id)
        if entry is not None and entry[0] <= self.clock():
            del self._sessions[session_id]
            owner = entry[1]
            if owner is not None:
                ids = self._owned.get(owner)
                if ids is not None:
                    ids.discard(session_id)
                    if not ids:
                        del self._owned[owner]
            return None
        return entry

    async def load_session(self, session_id: str) -> bytes | None:
        entry = self._live_session(session_id)
        return None if entry is None else entry[2]

    async def save_session(
        self, session_id: str, state: bytes, ttl: float, owner: str | None
    ) -> None:
        self._sessions[session_id] = (self.clock() + ttl, owner, state)
        if owner is not None:
            self._owned.setdefault(owner, set()).add(session_id)

    async def touch_sessions(self, sessions: Sequence[tuple[str, str | None]], ttl: float) -> None:
        now = self.clock()
        # Called periodically by the service: also the sweep of expired sessions.
        for session_id in [k for k, v in self._sessions.items() if v[0] <= now]:
            self._live_session(session_id)
        until = now + ttl
        for session_id, _ in sessions:
            entry = self._live_session(session_id)
            if entry is not None:
                self._sessions[session_id] = (until, entry[1], entry[2])

    async def count_sessions(self, owner: str) -> int:
        for session_id in list(self._owned.get(owner, ())):
            self._live_session(session_id)  # drops it when expired
        return len(self._owned.get(owner, ()))
