"""``football-realtime listen`` driven as a subprocess, and its row format."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import pytest

from football_realtime.client.listen import format_json, format_row
from football_realtime.client.models import parse_event
from football_realtime.client.subscription import RecoveryFailed

from ..client_support import TcpProxy, pred, refusing_listener, valid_token
from ..support import TIMEOUT, RunningServer, post_broadcast, start_serve_process


class Listener:
    """A running ``football-realtime listen`` with line readers on both pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.err: list[str] = []

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Listener:
        full_env = {**os.environ, "REALTIME_TOKEN": valid_token()}
        full_env.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "football_realtime",
            "listen",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
        )
        return cls(proc)

    async def err_line(self, needle: str, timeout: float = 3 * TIMEOUT) -> str:
        """Read stderr until a line containing ``needle``."""
        assert self.proc.stderr is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stderr.readline(), timeout)
            if not raw:
                raise AssertionError(f"stderr ended before {needle!r}: {self.err}")
            line = raw.decode().rstrip("\n")
            self.err.append(line)
            if needle in line:
                return line

    async def out_line(self, needle: str, timeout: float = 3 * TIMEOUT) -> str:
        """Read stdout until a line containing ``needle``."""
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not raw:
                raise AssertionError(f"stdout ended before {needle!r}; stderr: {self.err}")
            line = raw.decode().rstrip("\n")
            if needle in line:
                return line

    async def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        return await self.wait()

    async def wait(self) -> tuple[int, str]:
        _, err = await asyncio.wait_for(self.proc.communicate(), 3 * TIMEOUT)
        return int(self.proc.returncode or 0), "\n".join(self.err) + "\n" + err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def broadcast(srv: Any, event: dict[str, Any]) -> dict[str, Any]:
    r = await asyncio.to_thread(post_broadcast, srv, event)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_json_lines_survive_a_server_restart_and_sigint_exits_cleanly() -> None:
    sp = start_serve_process()
    lst = await Listener.start(
        "--url",
        sp.ws_url,
        "--type",
        "predictions",
        "--match-ids",
        "1,2",
        "--min-confidence",
        "0.7",
        "--leagues",
        "英超,西甲",
        "--json",
    )
    try:
        sub_line = await lst.err_line("subscribed")
        assert '"match_ids":[1,2]' in sub_line and '"leagues":["英超","西甲"]' in sub_line
        await broadcast(sp, pred(prediction_id=10, match_id=3))  # other match
        await broadcast(sp, pred(prediction_id=11, match_id=1, confidence=0.5))  # too unsure
        await broadcast(sp, pred(prediction_id=12, match_id=2, league="德甲"))  # other league
        sent = pred(prediction_id=13, match_id=1)
        await broadcast(sp, sent)
        got = json.loads(await lst.out_line('"event_type":"prediction_created"'))
        assert got["data"] == sent["data"]
        assert (got["stream"], got["offset"]) == ("predictions", 4)

        await asyncio.to_thread(sp.stop)
        await lst.err_line("reconnecting")
        sp = await asyncio.to_thread(start_serve_process, None, sp.port)
        await lst.err_line("connected to")
        notice = json.loads(await lst.out_line('"event_type":"recovery_failed"'))
        assert notice["data"]["streams"] == ["predictions"]
        assert "epoch" in notice["data"]["reason"]
        await broadcast(sp, pred(prediction_id=14, match_id=2))
        got = json.loads(await lst.out_line('"event_type":"prediction_created"'))
        assert got["data"]["prediction_id"] == 14

        code, err = await lst.stop(signal.SIGINT)
        assert code == 0, err
        assert "Traceback" not in err
        assert "listen: stopped" in err
    finally:
        lst.kill()
        sp.stop()


async def test_table_rows_and_sigterm(server: RunningServer) -> None:
    lst = await Listener.start("--url", server.ws_url, "--type", "predictions", "--match-ids", "1")
    try:
        await lst.err_line("subscribed")
        await broadcast(server, pred(prediction_id=5, match_id=1, away_team="切尔西\x1b[31m"))
        row = await lst.out_line("prediction_created")
        assert "predictions#1" in row
        assert "m=1" in row and "英超" in row
        assert "曼联 vs 切尔西" in row and "home_win conf=0.80" in row
        # Control characters from event data never reach the terminal.
        assert "\x1b" not in row and "\\x1b[31m" in row
        code, err = await lst.stop(signal.SIGTERM)
        assert code == 0, err
        assert "Traceback" not in err
    finally:
        lst.kill()


async def test_token_from_environment_or_flag(server: RunningServer) -> None:
    async with TcpProxy(server.port) as proxy:
        env_token, flag_token = valid_token("env-user"), valid_token("flag-user")
        for args, env, expect in (
            ((), {"REALTIME_TOKEN": env_token}, env_token),
            (("--token", flag_token), {"REALTIME_TOKEN": env_token}, flag_token),
        ):
            lst = await Listener.start("--url", proxy.url(), "--type", "matches", *args, env=env)
            try:
                await lst.err_line("subscribed")
                code, err = await lst.stop(signal.SIGINT)
                assert code == 0, err
            finally:
                lst.kill()
            assert f"token={expect}".encode() in proxy.requests[-1].split(b"\r\n", 1)[0]


async def test_bad_arguments_and_refused_subscription_exit_2(server: RunningServer) -> None:
    lst = await Listener.start("--url", server.ws_url)
    code, err = await lst.wait()
    assert code == 2 and "--type or --event-types" in err
    lst = await Listener.start("--url", server.ws_url, "--type", "odds", "--match-ids", "x")
    code, err = await lst.wait()
    assert code == 2 and "comma-separated integers" in err
    lst = await Listener.start("--url", server.ws_url, "--event-types", "not_an_event")
    code, err = await lst.wait()
    assert code == 2, err
    assert "refused the subscription" in err and "invalid_filter" in err
    assert "Traceback" not in err


async def test_gives_up_with_exit_1_after_max_attempts() -> None:
    async with refusing_listener() as (port, accepted):
        lst = await Listener.start(
            "--url",
            f"ws://127.0.0.1:{port}/realtime/ws",
            "--type",
            "matches",
            "--max-reconnect-attempts",
            "2",
        )
        code, err = await lst.wait()
    assert code == 1, err
    assert "gave up after 2 failed connection attempt" in err
    assert len(accepted) == 2
    assert "Traceback" not in err


SAMPLES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("prediction_created", pred()["data"], ["曼联 vs 切尔西", "home_win conf=0.80", "H=0.60"]),
    (
        "prediction_updated",
        {**pred()["data"], "minute": 30, "home_score": 1, "away_score": 0},
        ["1-0 30'"],
    ),
    (
        "prediction_completed",
        {
            "prediction_id": 1,
            "match_id": 1,
            "prediction": "home_win",
            "actual_result": "draw",
            "is_correct": False,
            "home_score": 1,
            "away_score": 1,
        },
        ["home_win -> draw (wrong)", "1-1"],
    ),
    (
        "match_started",
        {"match_id": 456, "home_team": "曼联", "away_team": "切尔西", "venue": "老特拉福德球场"},
        ["m=456", "曼联 vs 切尔西 @ 老特拉福德球场"],
    ),
    (
        "match_score_changed",
        {
            "match_id": 456,
            "home_score": 1,
            "away_score": 0,
            "minute": 25,
            "scoring_player": "布鲁诺·费尔南德斯",
        },
        ["1-0 25'", "布鲁诺·费尔南德斯"],
    ),
    (
        "match_status_changed",
        {"match_id": 2, "status": "half_time", "previous_status": "first_half", "minute": 45},
        ["first_half -> half_time 45'"],
    ),
    (
        "match_ended",
        {"match_id": 2, "home_team": "A", "away_team": "B", "home_score": 2, "away_score": 1},
        ["A 2-1 B"],
    ),
    (
        "odds_updated",
        {
            "match_id": 3,
            "bookmaker": "bet365",
            "home_odds": 1.9,
            "draw_odds": 3.4,
            "away_odds": 4.2,
        },
        ["bet365  1.90 / 3.40 / 4.20"],
    ),
    (
        "odds_significant_change",
        {
            "match_id": 3,
            "bookmaker": "bet365",
            "outcome": "home",
            "old_odds": 2.0,
            "new_odds": 1.6,
            "change_pct": -20.0,
        },
        ["home 2.00 -> 1.60 (-20.0%)"],
    ),
    (
        "system_alert",
        {
            "alert_type": "error",
            "message": "数据库连接异常",
            "severity": "high",
            "component": "database",
        },
        ["[high] database: 数据库连接异常"],
    ),
    ("system_status", {"status": "degraded", "message": "slow"}, ["degraded slow"]),
    ("data_refresh", {"data_type": "odds", "reason": "correction"}, ["odds correction"]),
    (
        "analytics_updated",
        {"period": "24h", "total_predictions": 120, "accuracy": 0.61},
        ["24h", "total_predictions=120", "accuracy=0.610"],
    ),
    ("connection_status", {"status": "connected", "connection_id": "c_x"}, ["connected c_x"]),
    (
        "user_subscription_changed",
        {
            "user_id": "u",
            "connection_id": "c",
            "action": "subscribed",
            "subscription_id": "sub_1",
            "subscriptions": [],
        },
        ["subscribed sub_1"],
    ),
    ("brand_new_type", {"x": 1}, ['{"x":1}']),
]


@pytest.mark.parametrize(("event_type", "data", "parts"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_row_format_for_every_event_type(
    event_type: str, data: dict[str, Any], parts: list[str]
) -> None:
    envelope = {
        "event_type": event_type,
        "data": data,
        "timestamp": "2025-10-29T20:25:00.000Z",
        "stream": "matches",
        "offset": 7,
    }
    ev = parse_event(envelope)
    row = format_row(ev)
    assert row.startswith("20:25:00  matches#7")
    assert event_type in row
    for part in parts:
        assert part in row, (part, row)
    assert "\n" not in row
    assert json.loads(format_json(ev)) == envelope


def test_recovery_notice_row_and_json() -> None:
    class Sub:
        id = "s1"
        subscription_type = "predictions"

    notice = RecoveryFailed(Sub(), ("predictions",), "epoch changed\r\n")  # type: ignore[arg-type]
    row = format_row(notice)
    assert "recovery_failed" in row and "s1 (predictions)" in row and "reload state" in row
    assert "\r" not in row and "\\x0d\\x0a" in row
    assert json.loads(format_json(notice)) == {
        "event_type": "recovery_failed",
        "data": {
            "subscription_id": "s1",
            "subscription_type": "predictions",
            "streams": ["predictions"],
            "reason": "epoch changed\r\n",
        },
    }
