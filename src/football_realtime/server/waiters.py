"""Lean stand-ins for ``asyncio.Queue`` and ``asyncio.Event``, one of each per connection.

An idle connection holds neither deques nor futures: the receive queue and the
writable flag allocate only while the connection's task waits on them.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Inbox:
    """What the ASGI ``receive`` reads: asyncio.Queue's interface, without its three
    deques and futures per connection. Single consumer (the connection's task)."""

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop is given, not looked up: ``asyncio.get_running_loop()`` makes a
        # ``getpid`` system call each time (CPython 3.11), once per message read.
        self._loop = loop
        # A list, not a deque: reading pauses after each message, so it holds one or two.
        self._items: list[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = []
        self._items.append(item)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def waiting(self) -> bool:
        """True while the consumer waits in ``get`` for an item (none queued)."""
        return self._waiter is not None and not self._items

    async def get(self) -> Any:
        while not self._items:
            w = self._waiter = self._loop.create_future()
            try:
                await w
            finally:
                if self._waiter is w:
                    self._waiter = None
        items = self._items
        item = items.pop(0)
        if not items:
            self._items = None
        return item


class Flag:
    """asyncio.Event's interface; the waiter list exists only while someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        ws = self._waiters
        if ws:
            self._waiters = None
            for w in ws:
                if not w.done():
                    w.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        w = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(w)
        await w


__all__ = ["Flag", "Inbox"]
