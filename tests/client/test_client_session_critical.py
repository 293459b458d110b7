"""The Python client resuming a durable session beyond its stream's history: the server
replays the kept critical events after its acknowledged offset, then what the history
still has (docs/protocol.md, Sessions); the client drops what its application already
took (the store's positions) and reports ``RecoveryFailed``, so the application sees each
event once, in order. Real server, real sockets."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from football_realtime.client import Event, RealtimeClient, RecoveryFailed

from ..client_support import FAST as _FAST
from ..client_support import apublish, take, valid_token
from ..edges.test_sessions_critical import beyond_the_history, session_acked_at_1
from ..edges.test_websocket import score
from ..support import running_server, token

FAST = {k: v for k, v in _FAST.items() if k != "token"}


@pytest.mark.parametrize(("taken", "expected"), [(1, [3, 6, 7, 8, 9]), (3, [6, 7, 8, 9])])
async def test_critical_events_beyond_the_history_reach_the_application_once(
    tmp_path: Path, taken: int, expected: list[int]
) -> None:
    with running_server(history_size=3) as srv:
        user = f"gus{taken}"
        # The session acknowledged offset 1 and went away; offsets 2..8 followed, more
        # than the history (3) holds. The store says the application took `taken`: with
        # 3, the previous process took the goal at 3 and was killed before its ack left.
        sid, epoch = await session_acked_at_1(srv, token(user))
        await beyond_the_history(srv)
        store = tmp_path / "session.json"
        store.write_bytes(
            orjson.dumps(
                {"session_id": sid, "positions": {"matches": {"epoch": epoch, "offset": taken}}}
            )
        )
        async with RealtimeClient(
            srv.ws_url, token=valid_token(user), session_store=store, **FAST
        ) as c:
            assert c.session["resumed"] is True
            await c.subscribe("matches", match_ids=[1])  # adopts the restored one
            await apublish(srv, score(1, home_score=4))  # 9: live
            items = await take(
                c,
                len(expected) + 1,
                pred=lambda i: (
                    isinstance(i, RecoveryFailed) or getattr(i, "offset", None) is not None
                ),
            )
            failed = [i for i in items if isinstance(i, RecoveryFailed)]
            assert len(failed) == 1 and failed[0].streams == ("matches",)
            assert "its critical events (match_score_changed" in failed[0].reason
            events = [i for i in items if isinstance(i, Event)]
            assert [e.offset for e in events] == expected
            assert c.stats.duplicates_dropped == (1 if taken == 3 else 0)
