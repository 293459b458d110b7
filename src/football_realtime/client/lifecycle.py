"""Where the client is: its state, its current connection, whether it stopped and why.

One :class:`Lifecycle` per client, shared by its parts: the supervisor attaches each
connection and marks it open once set up; requests wait here for an open connection;
``close()`` and ``wait_closed()`` meet here.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .connection import Connection
from .dispatch import Dispatcher
from .errors import ClientClosed, RequestTimeout
from .models import ClientState
from .subscription import SubscriptionRegistry


class Lifecycle:
    def __init__(self, dispatcher: Dispatcher, registry: SubscriptionRegistry) -> None:
        self._dispatcher = dispatcher
        self._registry = registry
        self.state = ClientState.CLOSED
        #: The connection being served (None between connections).
        self.conn: Connection | None = None
        #: The ``connection_status`` data of the current connection (its id etc.).
        self.connection_info: dict[str, Any] = {}
        self.started = False
        self.closing = False
        #: Why the client stopped for good (None: it did not, or the application closed it).
        self.error: BaseException | None = None
        #: The first connection is set up.
        self.opened = asyncio.Event()
        #: The current connection is set up (also set once the client stops).
        self.established = asyncio.Event()
        #: The client stopped and its iterators were ended.
        self.closed = asyncio.Event()

    def start(self) -> None:
        if self.started:
            raise RuntimeError("connect() was already called on this client")
        self.started = True

    def begin_closing(self) -> bool:
        """The application closes the client; False if it already was."""
        if self.closing:
            return False
        self.closing = True
        return True

    def connected(self, info: dict[str, Any]) -> None:
        """The server's ``connection_status`` ``connected`` data for this connection."""
        self.connection_info = info

    def set_state(self, state: ClientState) -> None:
        if state is self.state:
            return
        self.state = state
        if self.started:
            self._dispatcher.state_changed(state)

    def check_usable(self) -> None:
        if not self.started:
            raise RuntimeError("connect first (async with RealtimeClient(...) as client)")
        if self.closing or self.closed.is_set():
            raise self.error or ClientClosed("the client is closed")

    async def wait_open(self, deadline: float) -> Connection:
        """The current connection once it is set up; :class:`RequestTimeout` past
        ``deadline`` (loop time), the client's error if it stops meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            self.check_usable()
            conn = self.conn
            if conn is not None and conn.established:
                return conn
            left = deadline - loop.time()
            if left <= 0:
                raise RequestTimeout("not connected within the timeout")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.established.wait(), left)
            if self.established.is_set() and (self.conn is None or not self.conn.established):
                await asyncio.sleep(0)  # set for a connection that is already gone

    def attach(self, conn: Connection) -> None:
        self.conn = conn

    def mark_open(self, conn: Connection) -> None:
        """``conn`` is set up: requests may use it."""
        conn.established = True
        self.set_state(ClientState.OPEN)
        self.established.set()
        self.opened.set()

    def detach(self) -> None:
        """The current connection ended."""
        self.conn = None
        if not self.closing:
            self.established.clear()

    def fail(self, exc: BaseException) -> None:
        """The client stops for good because of ``exc``."""
        self.error = exc
        self.finish(exc)

    def finish(self, exc: BaseException | None) -> None:
        """The client stops: ``closed`` state, waiting subscribes and requests fail."""
        self.set_state(ClientState.CLOSED)
        self._registry.fail_waiting(exc or ClientClosed("the client is closed"))
        if self.started:
            self.established.set()  # wake request() waiters so they see the end

    def mark_closed(self) -> None:
        if self.started:
            self.closed.set()
