"""Where the simulated services' events go: the same public publish API a real platform
uses, either in-process (``await realtime.publish(event)``) or over HTTP
(``POST /realtime/broadcast`` with the admin token)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import httpx

from ..brokers.base import BrokerUnavailable

if TYPE_CHECKING:
    from ..app import Realtime


class PublishError(Exception):
    """The event was not published, but a later one may be (service down, broker away)."""


class PublishRefused(Exception):
    """The service refused for a reason retrying cannot fix (bad token, invalid event)."""


class Publisher(Protocol):
    async def publish(self, event: dict[str, Any]) -> None:
        """Publish one event; raise :class:`PublishError` or :class:`PublishRefused`."""
        ...

    async def close(self) -> None: ...


class InProcessPublisher:
    """For business services living in the service's own process."""

    def __init__(self, realtime: Realtime) -> None:
        self.realtime = realtime

    async def publish(self, event: dict[str, Any]) -> None:
        try:
            await self.realtime.publish(event)
        except BrokerUnavailable as exc:
            raise PublishError(f"broker unavailable: {exc}") from exc

    async def close(self) -> None:
        return None


class HttpPublisher:
    """For business services in another process: ``POST {url}/realtime/broadcast``."""

    def __init__(self, url: str, admin_token: str, timeout: float = 5.0) -> None:
        self.endpoint = url.rstrip("/") + "/realtime/broadcast"
        self.client = httpx.AsyncClient(
            timeout=timeout, headers={"Authorization": f"Bearer {admin_token}"}
        )

    async def publish(self, event: dict[str, Any]) -> None:
        try:
            resp = await self.client.post(self.endpoint, json=event)
        except httpx.HTTPError as exc:
            raise PublishError(f"{self.endpoint}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 200:
            return
        detail = resp.text[:500]
        if resp.status_code in (401, 403, 404, 422):
            raise PublishRefused(f"{self.endpoint} answered {resp.status_code}: {detail}")
        raise PublishError(f"{self.endpoint} answered {resp.status_code}: {detail}")

    async def close(self) -> None:
        await self.client.aclose()
