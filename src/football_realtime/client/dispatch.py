"""Event dispatch: handlers, the client's ``async for`` feed, each subscription's feed.

The reader hands deliveries over through a bounded queue; one task (:meth:`Dispatcher.run`)
takes them in order, calls handlers and fills feeds. So a handler that awaits a
request never blocks the reader that would read its reply, and a full queue is
backpressure on the reader, never loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from .feed import Feed
from .models import ClientState
from .options import ClientOptions
from .subscription import Item, RecoveryFailed, Subscription, SubscriptionRegistry

log = logging.getLogger("football_realtime.client")

Handler: TypeAlias = Callable[[Any], object]

#: Pseudo event types for :meth:`RealtimeClient.on` besides the 15 event types.
RECOVERY_FAILED = "recovery_failed"
CLIENT_STATE = "client_state"
ANY = "*"

# An item; for snapshot events the subscription that asked for it; and whether it is
# for that subscription only (state the application has already seen elsewhere).
Delivery: TypeAlias = "tuple[Item, Subscription | None, bool]"


@dataclass(frozen=True, slots=True)
class _Stop:
    error: BaseException | None


class Dispatcher:
    """Registered handlers and the client-level feed, and the task that serves them."""

    def __init__(
        self,
        options: ClientOptions,
        registry: SubscriptionRegistry,
        took: Callable[[Item], object] | None = None,
    ) -> None:
        """``took(item)``: the application is done with ``item`` (a durable session
        acknowledges it): every handler returned and, when the client's feed is read,
        the reader came back for the next item."""
        self._options = options
        self._registry = registry
        self._took = took
        self._handlers: dict[str, list[Handler]] = {}
        self._queue: asyncio.Queue[Delivery | ClientState | _Stop] = asyncio.Queue(maxsize=1024)
        #: What ``async for event in client`` reads (None with ``max_queue=0``).
        self.feed: Feed[Item] | None = (
            Feed(options.max_queue, "client event feed", took) if options.max_queue > 0 else None
        )

    # -- handlers ----------------------------------------------------------------

    def on(self, event_type: str, handler: Handler) -> None:
        self._handlers.setdefault(str(event_type), []).append(handler)

    def off(self, event_type: str, handler: Handler) -> None:
        hs = self._handlers.get(str(event_type))
        if hs is not None and handler in hs:
            hs.remove(handler)

    # -- input (the reader, the supervisor) --------------------------------------

    def offer(self, delivery: Delivery) -> bool:
        """Queue ``delivery`` if there is room; False when full (then :meth:`put`)."""
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            return False
        return True

    async def put(self, delivery: Delivery) -> None:
        """Queue ``delivery``, waiting for room."""
        await self._queue.put(delivery)

    def state_changed(self, state: ClientState) -> None:
        """Tell ``client_state`` handlers, if any (dropped when the queue is full)."""
        if self._handlers.get(CLIENT_STATE):
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(state)

    async def stop(self, error: BaseException | None) -> None:
        """After what is queued, end every feed (raising ``error`` if given) and return."""
        await self._queue.put(_Stop(error))

    def end_feeds(self, exc: BaseException | None) -> None:
        if self.feed is not None:
            self.feed.end(exc)
        self._registry.end_feeds(exc)

    # -- the dispatcher task -----------------------------------------------------

    async def run(self) -> None:
        """Deliver in queue order until :meth:`stop`."""
        while True:
            entry = await self._queue.get()
            if isinstance(entry, _Stop):
                self.end_feeds(entry.error)
                return
            if isinstance(entry, ClientState):
                for h in list(self._handlers.get(CLIENT_STATE, ())):
                    await self._call(h, entry)
                continue
            await self._deliver(*entry)

    async def _deliver(self, item: Item, target: Subscription | None, only: bool) -> None:
        subs: list[Subscription] = []
        if isinstance(item, RecoveryFailed):
            subs = [item.subscription]
        elif only and target is not None:
            subs = [target]
        elif item.stream is not None:
            matching = [s for s in self._registry if s.matches(item)]
            subs = [s for s in matching if s._after_start(item)]
            if target is not None and target not in subs:
                subs.append(target)
            if matching and not subs:
                # Replayed from a position older than the subscriptions it matches:
                # it predates them, nobody asked for it.
                if self._took is not None:
                    self._took(item)
                return
        handlers = [*self._handlers.get(item.event_type, ()), *self._handlers.get(ANY, ())]
        for h in handlers:
            await self._call(h, item)
        on_recovery_failed = self._options.on_recovery_failed
        if isinstance(item, RecoveryFailed) and on_recovery_failed is not None:
            await self._call(on_recovery_failed, item)
        feed = self.feed
        if feed is not None and not feed.disabled:
            await feed.put(item)  # taken when its reader comes back for more
            if self._took is not None and (feed.disabled or (handlers and not feed.reading)):
                self._took(item)  # the feed is not read: the handlers are the application
        elif self._took is not None:
            self._took(item)
        for s in subs:
            if s._feed is not None and s.active:
                await s._feed.put(item)

    async def _call(self, handler: Callable[[Any], object], arg: Any) -> None:
        try:
            result = handler(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("event handler %r failed", handler)
