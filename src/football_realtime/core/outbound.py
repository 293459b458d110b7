"""A connection's outbound buffer: bounded in bytes, with optional conflation.

What a socket cannot take at once waits here. ``push`` never blocks; it reports
overflow and the caller closes the connection with the slow-consumer code
(4001). Items with a conflation key replace a queued item with the same key in
place (latest wins), so a backed-up client gets the newest odds instead of a
backlog of stale ones. No I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable


class OutboundBuffer:
    __slots__ = ("_items", "_keyed", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        # Created on first use: most connections never queue anything.
        self._items: deque[list[object]] | None = None
        self._keyed: dict[Hashable, list[object]] | None = None

    def __len__(self) -> int:
        return len(self._items) if self._items else 0

    def __bool__(self) -> bool:
        return bool(self._items)

    def push(self, item: bytes, key: Hashable | None = None) -> bool:
        """Queue ``item``; return False when the buffer is now over its byte limit."""
        if key is not None and self._keyed is not None:
            entry = self._keyed.get(key)
            if entry is not None:
                old = entry[0]
                assert isinstance(old, bytes)
                entry[0] = item
                self.size += len(item) - len(old)
                return self.size <= self.limit
        entry = [item, key]
        if self._items is None:
            self._items = deque()
        self._items.append(entry)
        if key is not None:
            if self._keyed is None:
                self._keyed = {}
            self._keyed[key] = entry
        self.size += len(item)
        return self.size <= self.limit

    def pop(self) -> bytes:
        """Remove and return the oldest item. The buffer must not be empty."""
        assert self._items
        entry = self._items.popleft()
        item, key = entry
        assert isinstance(item, bytes)
        if key is not None and self._keyed is not None:
            del self._keyed[key]
        self.size -= len(item)
        if not self._items:
            self._items = None
            self._keyed = None
        return item

    def clear(self) -> None:
        self._items = None
        self._keyed = None
        self.size = 0
