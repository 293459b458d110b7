"""The Python client offers permessage-deflate (``compression=True``, the default) and
works the same when the server does not take the offer."""

from __future__ import annotations

from football_realtime.client import RealtimeClient

from ..client_support import FAST, apublish, pred, take, valid_token
from ..support import RunningServer, running_server


def deflating(srv: RunningServer) -> dict[str | None, bool]:
    """Server side: user id -> whether its connection writes compressed frames."""
    return srv.call(
        lambda: {c.user_id: c.deflate is not None for c in srv.realtime.hub.connections.values()}
    )  # type: ignore[no-any-return]


async def test_offered_by_default_and_the_same_events_arrive(server: RunningServer) -> None:
    on_opts = {**FAST, "user_id": "z", "token": valid_token("z")}
    off_opts = {**FAST, "user_id": "p", "token": valid_token("p"), "compression": False}
    async with (
        RealtimeClient(server.ws_url, **on_opts) as z,
        RealtimeClient(server.ws_url, **off_opts) as plain,
    ):
        assert z.compression is True and plain.compression is False
        assert deflating(server) == {"z": True, "p": False}
        await z.subscribe("predictions")
        await plain.subscribe("predictions")
        for i in range(5):
            await apublish(server, pred(prediction_id=i, match_id=i))
        got_z = [e.raw for e in await take(z, 5)]
        got_plain = [e.raw for e in await take(plain, 5)]
        assert got_z == got_plain
        assert [e["data"]["prediction_id"] for e in got_z] == list(range(5))


async def test_works_with_a_server_that_refuses_compression() -> None:
    with running_server(compression="off") as srv:
        opts = {**FAST, "user_id": "z", "token": valid_token("z")}
        async with RealtimeClient(srv.ws_url, **opts) as client:
            assert deflating(srv) == {"z": False}
            await client.subscribe("predictions")
            await apublish(srv, pred(prediction_id=1))
            (event,) = await take(client, 1)
            assert event.raw["data"]["prediction_id"] == 1
