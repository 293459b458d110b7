"""One connection's state: its socket, its requests, its tasks, its resubscription.

A :class:`Connection` lives from a handshake to the close; the client's parts act on
the current one (:attr:`Lifecycle.conn <.lifecycle.Lifecycle.conn>`) and never carry
state from one connection to the next here (that is in the stream tracker and the
subscriptions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection

from ..core.close_codes import CloseCode
from .dispatch import Delivery
from .recovery import ResyncBuffer
from .requests import Lost, RequestChannel
from .subscription import Subscription

log = logging.getLogger("football_realtime.client")

#: Per stream, (epoch, offset).
Positions = dict[str, tuple[str, int]]


@dataclass(slots=True)
class SnapshotWindow:
    """The snapshot a subscribe asked for: per stream, the offset up to which the
    events that follow are that subscription's initial state."""

    sub: Subscription
    offsets: dict[str, int]


@dataclass(slots=True)
class SyncState:
    """Where one connection is in renewing the subscriptions (see :mod:`.resync`)."""

    #: Events held while resubscribing; None once released.
    buffer: ResyncBuffer[Delivery] | None
    snapshot: SnapshotWindow | None = None
    #: Subscriptions not yet acked, and whether a barrier reply came after every ack
    #: sent so far (then all replays are in).
    waiting: set[str] = field(default_factory=set)
    barrier_passed: bool = False
    # Stream positions from acks, applied when safe: at the end of the resync (acks
    # with `since`: their replay covers everything up to them), or one heartbeat
    # round later (plain acks, whose offset may be ahead of delivery).
    resync_advance: Positions = field(default_factory=dict)
    advance: Positions = field(default_factory=dict)
    advance_ready: Positions = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Connection:
    ws: ClientConnection
    gen: int
    last_rx: float
    channel: RequestChannel[Delivery]
    sync: SyncState
    #: The reader waits for the application (backpressure), not for the network.
    blocked: bool = False
    #: Set up: authenticated, resubscribed, held events released.
    established: bool = False
    close_code: int = CloseCode.ABNORMAL
    close_reason: str = ""
    #: Why the client must stop (set by whoever finds out; the reader then closes).
    fatal: BaseException | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Subscriptions a resumed durable session restored on this connection, not yet
    #: adopted by a ``subscribe`` (``user_subscription_changed`` data; ``.session``).
    restored: list[dict[str, Any]] = field(default_factory=list)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` as long as this connection is served (a lost connection ends it quietly)."""

        async def run() -> None:
            with contextlib.suppress(Lost):
                await coro

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def abort(self, why: str) -> None:
        """Drop the connection without a closing handshake (it is dead or stuck)."""
        log.warning("dropping the connection: %s", why)
        transport = self.ws.transport
        if transport is not None:
            transport.abort()
