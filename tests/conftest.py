from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import RunningServer, running_server


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """The service with default settings on a free port (fast WebSocket layer)."""
    with running_server() as srv:
        yield srv


@pytest.fixture(params=["fast", "asgi"])
def any_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """The service on both send paths: our WebSocket layer and plain ASGI sends."""
    with running_server(fast=request.param == "fast") as srv:
        yield srv
