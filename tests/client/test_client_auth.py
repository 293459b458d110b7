"""The Python client with the security layer: in-band auth, refresh, expiry, tier changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from football_realtime.client import (
    ClientState,
    ForbiddenError,
    RealtimeClient,
    TerminalCloseError,
)

from ..client_support import FAST, apublish, drain, score, take, until
from ..support import UNIT, RunningServer, running_server, token

MATCH = {"match_id": 456, "home_team": "曼联", "away_team": "切尔西", "league": "英超"}


async def test_token_refreshed_in_band_before_expiry_keeps_the_connection() -> None:
    issued: list[str] = []

    def provider() -> str:
        issued.append(token("r", ttl=1.5 * UNIT, jti=str(len(issued))))
        return issued[-1]

    with running_server(jwt_leeway=0, token_expiry_warning=0.8 * UNIT) as srv:
        opts = {**FAST, "token": None, "token_provider": provider}
        async with RealtimeClient(srv.ws_url, **opts) as client:
            await client.subscribe("matches")
            # Each token lives 1.5 s; the warning 0.8 s before expiry triggers a refresh.
            await until(lambda: len(issued) >= 3, timeout=5 * UNIT)
            assert client.stats.connections == 1
            assert client.state is ClientState.OPEN
            await apublish(srv, {"event_type": "match_started", "data": MATCH})
            (ev,) = await take(client, 1)
            assert ev.event_type == "match_started"


async def test_expired_token_without_provider_is_terminal() -> None:
    with running_server(jwt_leeway=0, token_expiry_warning=0.2 * UNIT) as srv:
        opts = {**FAST, "token": token("n", ttl=1.5 * UNIT)}
        async with RealtimeClient(srv.ws_url, **opts) as client:
            with pytest.raises(TerminalCloseError) as ei:
                await drain(client)
            assert ei.value.code == 4502
            assert srv.realtime.stats.connections_opened == 1


async def test_auth_message_transport_with_required_auth() -> None:
    with running_server(require_auth=True) as srv:
        opts = {**FAST, "token": token("m"), "token_transport": "auth_message"}
        async with RealtimeClient(srv.ws_url, **opts) as client:
            assert client.connection_info.get("authenticated") is True
            await client.subscribe("matches", match_ids=[1])
            await apublish(srv, score(1))
            (ev,) = await take(client, 1)
            assert ev.raw["data"]["match_id"] == 1
        # A bad token in the auth message stops the client instead of looping.
        opts = {**FAST, "token": "not-a-jwt", "token_transport": "auth_message"}
        with pytest.raises(TerminalCloseError):
            async with RealtimeClient(srv.ws_url, **opts):
                pass


async def test_tier_downgrade_by_refresh_removes_subscriptions(server: RunningServer) -> None:
    tiers = iter(["premium", "free"])
    opts: dict[str, Any] = {
        **FAST,
        "token": None,
        "token_provider": lambda: token("d", next(tiers)),
    }
    async with RealtimeClient(server.ws_url, **opts) as client:
        odds = await client.subscribe("odds")
        preds = await client.subscribe("predictions")
        assert len(preds.event_types) == 3
        await client.refresh_token()
        assert client.subscriptions == [preds]
        assert preds.event_types == ("prediction_created",)
        with pytest.raises(ForbiddenError):
            await drain(odds)
        await asyncio.sleep(0)
