"""A connection's outbound buffer: bounded in bytes, with optional conflation.

What a socket cannot take at once waits here. ``push`` never blocks; it reports
overflow and the caller closes the connection with the slow-consumer code (4001).

Conflation (latest wins): an item pushed with a key while an item with the same key
is still queued removes the queued one and is appended at the end, so what the client
finally receives stays in publish order (per-stream offsets only increase) and skips
the stale values. :meth:`pop` tells how many queued items the popped one replaced, so
the client can be told (``"conflated": n``). No I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Entry(Generic[T]):
    __slots__ = ("item", "key", "replaced", "size")

    def __init__(self, item: T | None, size: int, key: Hashable | None, replaced: int) -> None:
        self.item = item  # None once replaced by a newer item with the same key
        self.size = size
        self.key = key
        self.replaced = replaced


class OutboundBuffer(Generic[T]):
    __slots__ = ("_dead", "_entries", "_keyed", "conflated", "limit", "live", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0  # bytes of live items
        self.live = 0  # live items
        self.conflated = 0  # items replaced over the buffer's lifetime
        self._dead = 0  # replaced entries still in the deque (dropped lazily)
        # Created on first use: most connections never queue anything.
        self._entries: deque[_Entry[T]] | None = None
        self._keyed: dict[Hashable, _Entry[T]] | None = None

    def __len__(self) -> int:
        return self.live

    def __bool__(self) -> bool:
        return self.live > 0

    def push(self, item: T, size: int, key: Hashable | None = None) -> bool:
        """Queue ``item`` (``size`` bytes); False when the buffer is now over its limit."""
        replaced = 0
        keyed = self._keyed
        if key is not None:
            if keyed is None:
                keyed = self._keyed = {}
            else:
                old = keyed.get(key)
                if old is not None:
                    old.item = None
                    self.size -= old.size
                    self.live -= 1
                    self.conflated += 1
                    self._dead += 1
                    replaced = old.replaced + 1
        entry = _Entry(item, size, key, replaced)
        if keyed is not None and key is not None:
            keyed[key] = entry
        if self._entries is None:
            self._entries = deque()
        self._entries.append(entry)
        self.size += size
        self.live += 1
        if self._dead > 64 and self._dead > self.live:
            # A client that reads nothing while one key keeps updating would otherwise
            # collect replaced entries without bound.
            self._entries = deque(e for e in self._entries if e.item is not None)
            self._dead = 0
        return self.size <= self.limit

    def pop(self) -> tuple[T, int]:
        """Remove the oldest live item: (item, how many queued items it replaced).

        The buffer must not be empty.
        """
        entries = self._entries
        assert entries
        while True:
            entry = entries.popleft()
            item = entry.item
            if item is not None:
                break
            self._dead -= 1
        key = entry.key
        if key is not None and self._keyed is not None and self._keyed.get(key) is entry:
            del self._keyed[key]
        self.size -= entry.size
        self.live -= 1
        if not self.live:
            self._entries = None
            self._keyed = None
            self._dead = 0
        return item, entry.replaced

    def peek_size(self) -> int:
        """Size of the item :meth:`pop` would return next (0 when empty)."""
        if not self.live:
            return 0
        assert self._entries
        for entry in self._entries:
            if entry.item is not None:
                return entry.size
        return 0  # pragma: no cover - live > 0 guarantees a live entry

    def clear(self) -> None:
        self._entries = None
        self._keyed = None
        self._dead = 0
        self.size = 0
        self.live = 0
