"""Subscribing on the wire: the ``subscribe`` request, its ack or error, retries, removal.

A subscription is sent on each connection it lives through, with ``since`` (the
last known position of its streams) once it has any. The ack confirms what the
server will send (event types and streams, which a tier may narrow) and whether it
could replay what was missed (:mod:`.resync` tells the application when it could
not). An ``unavailable`` error (the broker is unreachable) is retried with backoff;
``invalid_since`` (the subscription's streams changed) subscribes afresh; other
errors remove it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from .connection import Connection
from .dispatch import Delivery
from .errors import RequestError
from .lifecycle import Lifecycle
from .options import ClientOptions
from .resync import Resync
from .session import ClientSession
from .subscription import Subscription, SubscriptionRegistry

log = logging.getLogger("football_realtime.client")


class Subscriber:
    def __init__(
        self,
        options: ClientOptions,
        registry: SubscriptionRegistry,
        resync: Resync,
        lifecycle: Lifecycle,
        session: ClientSession,
    ) -> None:
        self._options = options
        self._registry = registry
        self._resync = resync
        self._life = lifecycle
        self._session = session

    async def renew_all(self, conn: Connection) -> None:
        """Send every subscription not yet sent on ``conn`` (after a reconnect), or adopt
        the one a resumed durable session restored."""
        for sub in list(self._registry):
            if sub.active and sub._gen != conn.gen:
                notices = self.adopt(conn, sub)
                if notices is not None:
                    if conn.sync.buffer is not None:
                        for notice in notices:
                            conn.sync.buffer.add(notice)
                    continue
                self._resync.expect(conn, sub)
                await self.send(conn, sub)

    def adopt(self, conn: Connection, sub: Subscription) -> list[Delivery] | None:
        """Take the subscription the session restored on ``conn`` with ``sub``'s type and
        filters as ``sub``'s (no ``subscribe`` sent): its announcement is its ack.
        Returns the notices to deliver (``recovered: false``), None when there is none
        to adopt."""
        if not self._session.enabled:
            return None
        entry = self._session.claim(conn, sub.subscription_type, sub.filters)
        if entry is None:
            return None
        sub._gen = conn.gen
        streams = entry["streams"]
        result = {**entry["subscription"], "streams": streams}
        sub._apply_ack(result)
        changed = self._resync.note_ack(conn, sub, streams, renewed=True)
        outcome = {"recovered": entry.get("recovered") is True, "reason": entry.get("reason")}
        notices = self._resync.outcome(sub, outcome, streams, changed)
        if not sub._ready.done():
            sub._ready.set_result(None)
        return notices

    async def send(self, conn: Connection, sub: Subscription) -> None:
        """Send ``sub``'s ``subscribe`` on ``conn``; its reply is handled by the reader."""
        sub._gen = conn.gen
        data: dict[str, Any] = {"filters": sub.filters}
        if sub.subscription_type is not None:
            data["subscription_type"] = sub.subscription_type
        streams = sub.streams or (self._session.streams_of(sub) if self._session.enabled else ())
        since = self._resync.since(streams) if streams else None
        if since is not None:
            data["since"] = since
        if sub.snapshot:
            data["snapshot"] = True
        await conn.channel.send(
            "subscribe",
            data,
            on_ack=lambda result: self._on_ack(conn, sub, result, since),
            on_error=lambda exc: self._on_error(conn, sub, exc, since),
        )

    def drop(self, sub: Subscription, exc: BaseException | None) -> None:
        """Stop ``sub`` on the client side (its iterator ends, raising ``exc`` if given)."""
        self._registry.remove(sub, exc)
        conn = self._life.conn
        if conn is not None:
            self._resync.settled(conn, sub)  # the resubscription no longer waits for it

    def _on_ack(
        self,
        conn: Connection,
        sub: Subscription,
        result: dict[str, Any],
        since: dict[str, Any] | None,
    ) -> list[Delivery]:
        if not sub.active:
            # Given up (timeout) or unsubscribed meanwhile: remove it on the server too.
            sid = result.get("subscription_id")
            if isinstance(sid, str):
                conn.spawn(conn.channel.fire("unsubscribe", {"subscription_id": sid}))
            return []
        sub._apply_ack(result)
        sub._retries = 0
        streams = result.get("streams")
        streams = streams if isinstance(streams, Mapping) else {}
        changed = self._resync.note_ack(conn, sub, streams, renewed=since is not None)
        out = self._resync.outcome(sub, result, since, changed)
        if sub.snapshot and result.get("recovered") is not True:
            self._resync.open_window(conn, sub, streams)
        if not sub._ready.done():
            sub._ready.set_result(None)
        self._resync.settled(conn, sub)
        return out

    def _on_error(
        self, conn: Connection, sub: Subscription, exc: RequestError, since: dict[str, Any] | None
    ) -> list[Delivery]:
        if exc.code == "unavailable" and sub.active:
            # The broker is unreachable for now: ask again after a backoff delay; the
            # resubscription (and the events held meanwhile) waits for the answer.
            conn.spawn(self._retry(conn, sub))
            return []
        if exc.code == "invalid_since" and since is not None and sub.active:
            # The server's idea of the subscription's streams changed (e.g. the tier
            # narrowed it): subscribe afresh and say that nothing was recovered.
            sub.streams = ()
            conn.spawn(self.send(conn, sub))
            return [self._resync.notice(sub, tuple(since), exc.message, "invalid since")]
        if sub._ready.done():
            log.warning("the server refused to renew subscription %s: %s", sub.id, exc)
        self.drop(sub, exc)
        if not sub._ready.done():
            sub._ready.set_exception(exc)
        self._resync.settled(conn, sub)
        return []

    async def _retry(self, conn: Connection, sub: Subscription) -> None:
        sub._retries += 1
        await asyncio.sleep(self._options.backoff.delay(sub._retries))
        if sub.active and self._life.conn is conn:
            await self.send(conn, sub)
