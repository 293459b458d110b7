"""A bounded queue read by ``async for``: the client's and each subscription's.

Backpressure, not loss: once a feed has been iterated, a full feed makes the
client wait, which stops it reading the socket (the server then closes a reader
that stays too slow with 4001, and the client reconnects and recovers the gap).
A feed nobody has ever iterated is switched off when it fills, so applications
that consume only through handlers never stall; iterating it afterwards raises
:class:`FeedDisabled`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import FeedDisabled

log = logging.getLogger("football_realtime.client")

T = TypeVar("T")


class Feed(Generic[T]):
    def __init__(
        self, maxsize: int, name: str, on_taken: Callable[[T], object] | None = None
    ) -> None:
        """``on_taken(item)``: the reader came back for more after ``item`` (it is done
        with it), or :meth:`taken_last` said so."""
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.name = name
        self._on_taken = on_taken
        self._given: T | None = None
        self._items: deque[T] = deque()
        self._read = False
        self._disabled = False
        self._end: BaseException | None = None
        self._ended = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def disabled(self) -> bool:
        return self._disabled

    async def put(self, item: T) -> None:
        """Append ``item``; waits while full if the feed is being read."""
        while True:
            if self._ended or self._disabled:
                return
            if len(self._items) < self.maxsize:
                self._items.append(item)
                self._readable.set()
                return
            if not self._read:
                self._disabled = True
                self._items.clear()
                # Usual for feeds an application does not use (it reads the client's
                # iterator, or handlers): iterating it later raises FeedDisabled.
                log.info(
                    "%s: %d items buffered and never read; buffering for it is switched "
                    "off (iterate it from the start, or use handlers)",
                    self.name,
                    self.maxsize,
                )
                return
            self._writable.clear()
            await self._writable.wait()

    def end(self, exc: BaseException | None = None) -> None:
        """No more items: readers get what is buffered, then ``exc`` (or the end)."""
        if self._ended:
            return
        self._ended = True
        self._end = exc
        self._readable.set()
        self._writable.set()

    @property
    def reading(self) -> bool:
        """Iterated at least once, and still taking items."""
        return self._read and not self._disabled

    def taken_last(self) -> None:
        """The item given last counts as taken (the application closed the client)."""
        given, self._given = self._given, None
        if given is not None and self._on_taken is not None:
            self._on_taken(given)

    async def get(self) -> T:
        self._read = True
        self.taken_last()
        while True:
            if self._items:
                item = self._items.popleft()
                self._writable.set()
                if self._on_taken is not None:
                    self._given = item
                return item
            if self._disabled:
                raise FeedDisabled(f"{self.name}: buffering was switched off (never read)")
            if self._ended:
                if self._end is not None:
                    raise self._end
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()

    def __aiter__(self) -> Feed[T]:
        self._read = True
        return self

    async def __anext__(self) -> T:
        return await self.get()
