"""Tokens: where the handshake carries them, fetching fresh ones, in-band ``auth``.

A ``token_provider`` is asked before every connection attempt and by
``refresh_token()``; on a live connection a fresh token is also sent as an ``auth``
message, whose ack may remove or narrow subscriptions (the tier changed), which the
client follows so that its routing matches what the server sends.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from .connection import Connection
from .dispatch import Delivery
from .errors import RequestTimeout, request_error
from .lifecycle import Lifecycle
from .options import ClientOptions
from .subscribe import Subscriber
from .subscription import SubscriptionRegistry

log = logging.getLogger("football_realtime.client")

TokenProvider: TypeAlias = Callable[[], "str | Awaitable[str]"]


class Authenticator:
    def __init__(
        self,
        options: ClientOptions,
        token: str | None,
        token_provider: TokenProvider | None,
        registry: SubscriptionRegistry,
        subscriber: Subscriber,
        lifecycle: Lifecycle,
    ) -> None:
        self._options = options
        self._token = token
        self._provider = token_provider
        self._registry = registry
        self._subscriber = subscriber
        self._life = lifecycle

    @property
    def has_provider(self) -> bool:
        return self._provider is not None

    @property
    def in_band_token(self) -> str | None:
        """The token to send first on a new connection (``token_transport="auth_message"``)."""
        return self._token if self._options.token_transport == "auth_message" else None

    async def handshake(self) -> tuple[dict[str, str | None], dict[str, str]]:
        """Query parameters and headers for the next handshake (asks the provider)."""
        if self._provider is not None:
            self._token = await _resolve(self._provider())
        token = self._token
        o = self._options
        params: dict[str, str | None] = {"user_id": o.user_id, "session_id": o.session_id}
        headers: dict[str, str] = {}
        if token is not None and o.token_transport == "query":
            params["token"] = token
        elif token is not None and o.token_transport == "header":
            headers["Authorization"] = f"Bearer {token}"
        return params, headers

    async def refresh(self) -> str:
        """See :meth:`RealtimeClient.refresh_token`."""
        if self._provider is None:
            raise RuntimeError("no token_provider was given")
        token = await _resolve(self._provider())
        self._token = token
        conn = self._life.conn
        if conn is not None and conn.established:
            await self.authenticate(conn, token)
        return token

    async def refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("token refresh failed: %s", exc)

    async def authenticate(self, conn: Connection, token: str) -> dict[str, Any]:
        fut = await conn.channel.send(
            "auth", {"token": token}, on_ack=lambda r: self._on_ack(conn, r)
        )
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self._options.request_timeout)
        except TimeoutError:
            raise RequestTimeout("no reply to auth within the timeout") from None

    def _on_ack(self, conn: Connection, result: dict[str, Any]) -> list[Delivery]:
        # A refresh may change the tier: the server lists the subscriptions it removed
        # and the narrowed ones; the client follows so routing matches delivery.
        removed = result.get("removed")
        if isinstance(removed, list):
            gone = {r.get("subscription_id") for r in removed if isinstance(r, dict)}
            for sub in list(self._registry):
                if sub._gen == conn.gen and sub.server_id in gone:
                    log.warning("subscription %s removed by the server after auth", sub.id)
                    self._subscriber.drop(
                        sub,
                        request_error(
                            "forbidden", "removed: the token's tier does not allow it", "auth"
                        ),
                    )
        current = result.get("subscriptions")
        if isinstance(current, list):
            by_server_id = {s.server_id: s for s in self._registry if s._gen == conn.gen}
            for desc in current:
                if isinstance(desc, dict):
                    found = by_server_id.get(desc.get("subscription_id"))
                    if found is not None:
                        found._apply_ack({**desc, "streams": dict.fromkeys(found.streams)})
        return []


async def _resolve(value: str | Awaitable[str]) -> str:
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, str):
        raise TypeError("the token provider must return a string")
    return value
