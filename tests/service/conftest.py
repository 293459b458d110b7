"""A started :class:`RealtimeService` on the in-process broker, no web framework."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from football_realtime.service.realtime import RealtimeService

from ..support import make_settings


@pytest.fixture
async def service() -> AsyncIterator[RealtimeService]:
    svc = RealtimeService(make_settings())
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
