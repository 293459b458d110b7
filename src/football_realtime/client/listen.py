"""``football-realtime listen``: print a live feed of events in a terminal.

Events go to stdout, one line each: a readable table row by default, the
envelope as one JSON line with ``--json``. Connection news (connected,
reconnecting, gave up) goes to stderr, so ``--json`` output stays machine-readable.
The listener reconnects and resubscribes by itself (server restarts included) and
exits with 0 on Ctrl-C / SIGINT / SIGTERM, 1 when the client stops for good
(terminal close code, reconnect attempts used up) and 2 on bad arguments or a
subscription the server refuses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..core.events import EventType, SubscriptionType
from .errors import ClientClosed, RequestError
from .models import ClientState, Event
from .realtime import RealtimeClient
from .subscription import RecoveryFailed

DEFAULT_URL = "ws://localhost:8000/realtime/ws"

# Control characters (ANSI escapes, CR, ...) in event data must not drive the terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def clean(text: str) -> str:
    return text.translate(_CONTROL)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"WebSocket URL (default {DEFAULT_URL})")
    p.add_argument(
        "--type",
        dest="subscription_type",
        choices=[t.value for t in SubscriptionType],
        help="stream to subscribe to (required unless --event-types is given)",
    )
    p.add_argument("--match-ids", type=_int_list, help="comma-separated match ids, e.g. 1,2")
    p.add_argument("--leagues", type=_str_list, help="comma-separated leagues, e.g. 英超,西甲")
    p.add_argument("--min-confidence", type=float, help="minimum prediction confidence, 0..1")
    p.add_argument("--event-types", type=_str_list, help="comma-separated event types to narrow to")
    p.add_argument("--user-id", help="user id to connect as")
    p.add_argument(
        "--token", help="access token (default: the REALTIME_TOKEN environment variable)"
    )
    p.add_argument("--snapshot", action="store_true", help="start with the current state")
    p.add_argument("--json", action="store_true", help="print raw JSON lines")
    p.add_argument(
        "--max-reconnect-attempts",
        type=int,
        default=None,
        help="give up after this many failed attempts in a row (default: never)",
    )
    p.add_argument("--heartbeat-interval", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument(
        "--session",
        help="durable session NAME: its id and the positions printed so far are kept in "
        "SESSION_DIR/NAME.json, so a restarted listen prints every event it missed, once",
    )
    p.add_argument(
        "--session-dir",
        help="where --session files live (default: $REALTIME_SESSION_DIR, else "
        "$XDG_STATE_HOME/football-realtime/sessions, else ~/.local/state/...)",
    )


_SESSION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def session_path(name: str, directory: str | None) -> Path:
    """The store file of ``--session NAME``."""
    if not _SESSION_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError("--session must be 1-64 characters of letters, digits and _ . -")
    base = directory or os.environ.get("REALTIME_SESSION_DIR")
    if not base:
        state = os.environ.get("XDG_STATE_HOME") or os.path.join(
            os.path.expanduser("~"), ".local", "state"
        )
        base = os.path.join(state, "football-realtime", "sessions")
    return Path(base) / f"{name}.json"


def _int_list(raw: str) -> list[int]:
    try:
        values = [int(p) for p in raw.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {raw!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _str_list(raw: str) -> list[str]:
    values = [p.strip() for p in raw.split(",") if p.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


# -- formatting ----------------------------------------------------------------


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    return fmt.format(value) if isinstance(value, int | float) else "?"


def _teams(d: dict[str, Any]) -> str:
    if d.get("home_team") or d.get("away_team"):
        return f"{d.get('home_team', '?')} vs {d.get('away_team', '?')}"
    return ""


def _minute(d: dict[str, Any]) -> str:
    return f"{d['minute']}'" if isinstance(d.get("minute"), int) else ""


def _prediction(d: dict[str, Any]) -> str:
    probs = " ".join(
        f"{k[0].upper()}={_num(d.get(f'{k}_prob'))}" for k in ("home_win", "draw", "away_win")
    )
    return f"{_teams(d)}  {d.get('prediction', '?')} conf={_num(d.get('confidence'))}  {probs}"


def _prediction_updated(d: dict[str, Any]) -> str:
    score = ""
    if isinstance(d.get("home_score"), int) and isinstance(d.get("away_score"), int):
        score = f"  {d['home_score']}-{d['away_score']} {_minute(d)}"
    return _prediction(d) + score


def _prediction_completed(d: dict[str, Any]) -> str:
    mark = "correct" if d.get("is_correct") else "wrong"
    return (
        f"{d.get('prediction', '?')} -> {d.get('actual_result', '?')} ({mark})  "
        f"{d.get('home_score', '?')}-{d.get('away_score', '?')}"
    )


def _match_started(d: dict[str, Any]) -> str:
    venue = f" @ {d['venue']}" if d.get("venue") else ""
    return f"{_teams(d)}{venue}"


def _score(d: dict[str, Any]) -> str:
    who = f"  {d['scoring_player']}" if d.get("scoring_player") else ""
    return f"{d.get('home_score', '?')}-{d.get('away_score', '?')} {_minute(d)}{who}"


def _status(d: dict[str, Any]) -> str:
    prev = f"{d['previous_status']} -> " if d.get("previous_status") else ""
    return f"{prev}{d.get('status', '?')} {_minute(d)}"


def _ended(d: dict[str, Any]) -> str:
    return (
        f"{d.get('home_team', 'home')} {d.get('home_score', '?')}-{d.get('away_score', '?')} "
        f"{d.get('away_team', 'away')}"
    )


def _odds(d: dict[str, Any]) -> str:
    return (
        f"{d.get('bookmaker', '?')}  {_num(d.get('home_odds'))} / {_num(d.get('draw_odds'))}"
        f" / {_num(d.get('away_odds'))}"
    )


def _odds_change(d: dict[str, Any]) -> str:
    return (
        f"{d.get('bookmaker', '?')}  {d.get('outcome', '?')} {_num(d.get('old_odds'))} -> "
        f"{_num(d.get('new_odds'))} ({_num(d.get('change_pct'), '{:+.1f}')}%)"
    )


def _alert(d: dict[str, Any]) -> str:
    return f"[{d.get('severity', '?')}] {d.get('component', '?')}: {d.get('message', '')}"


def _system_status(d: dict[str, Any]) -> str:
    return f"{d.get('status', '?')} {d.get('message') or ''}"


def _refresh(d: dict[str, Any]) -> str:
    return f"{d.get('data_type', '?')} {d.get('reason') or ''}"


def _analytics(d: dict[str, Any]) -> str:
    parts = [
        f"{k}={_num(d[k], '{:.3f}') if k != 'total_predictions' else d[k]}"
        for k in ("period", "total_predictions", "accuracy", "hit_rate", "brier_score")
        if d.get(k) is not None and k != "period"
    ]
    period = f"{d['period']}  " if d.get("period") else ""
    return period + " ".join(parts)


def _connection(d: dict[str, Any]) -> str:
    return f"{d.get('status', '?')} {d.get('connection_id', '')}"


def _user_sub(d: dict[str, Any]) -> str:
    return f"{d.get('action', '?')} {d.get('subscription_id', '')}"


_SUMMARY: dict[str, Callable[[dict[str, Any]], str]] = {
    EventType.PREDICTION_CREATED: _prediction,
    EventType.PREDICTION_UPDATED: _prediction_updated,
    EventType.PREDICTION_COMPLETED: _prediction_completed,
    EventType.MATCH_STARTED: _match_started,
    EventType.MATCH_SCORE_CHANGED: _score,
    EventType.MATCH_STATUS_CHANGED: _status,
    EventType.MATCH_ENDED: _ended,
    EventType.ODDS_UPDATED: _odds,
    EventType.ODDS_SIGNIFICANT_CHANGE: _odds_change,
    EventType.SYSTEM_ALERT: _alert,
    EventType.SYSTEM_STATUS: _system_status,
    EventType.DATA_REFRESH: _refresh,
    EventType.ANALYTICS_UPDATED: _analytics,
    EventType.CONNECTION_STATUS: _connection,
    EventType.USER_SUBSCRIPTION_CHANGED: _user_sub,
}


def format_row(item: Event[Any] | RecoveryFailed) -> str:
    """One readable line: time, stream#offset, event type, match, league, summary."""
    if isinstance(item, RecoveryFailed):
        sub = item.subscription
        return clean(
            f"{'--:--:--':8}  {'/'.join(item.streams) or '-':<18}  {'recovery_failed':<24}  "
            f"subscription {sub.id} ({sub.subscription_type or '-'}) not recovered: "
            f"{item.reason}; reload state"
        )
    d = item.raw.get("data")
    data: dict[str, Any] = d if isinstance(d, dict) else {}
    ts = item.timestamp or ""
    clock = ts[11:19] if len(ts) >= 19 else "--:--:--"
    where = f"{item.stream}#{item.offset}" if item.stream is not None else "-"
    if item.snapshot:
        where += " (snap)"
    match = f"m={data['match_id']}" if isinstance(data.get("match_id"), int) else "-"
    league = str(data.get("league") or "")
    fmt = _SUMMARY.get(item.event_type)
    summary = fmt(data) if fmt is not None else orjson.dumps(data).decode()[:160]
    lg = f"{league}  " if league else ""
    row = f"{clock:8}  {where:<18}  {item.event_type:<24}  {match:<8}  {lg}{summary}"
    return clean(row.rstrip())


def format_json(item: Event[Any] | RecoveryFailed) -> str:
    obj = item.to_dict() if isinstance(item, RecoveryFailed) else item.raw
    return orjson.dumps(obj).decode()


# -- running -------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Entry point of ``football-realtime listen`` (args from :func:`add_arguments`)."""
    if args.subscription_type is None and not args.event_types:
        print("listen: give --type or --event-types", file=sys.stderr)
        return 2
    if args.min_confidence is not None and not 0.0 <= args.min_confidence <= 1.0:
        print("listen: --min-confidence must be between 0 and 1", file=sys.stderr)
        return 2
    if args.max_reconnect_attempts is not None and args.max_reconnect_attempts < 1:
        print("listen: --max-reconnect-attempts must be >= 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_listen(args, sys.stdout, sys.stderr))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 0


async def _listen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    token = args.token if args.token is not None else os.environ.get("REALTIME_TOKEN") or None
    try:
        store = session_path(args.session, args.session_dir) if args.session is not None else None
        client = RealtimeClient(
            args.url,
            user_id=args.user_id,
            token=token,
            session_store=store,
            max_reconnect_attempts=args.max_reconnect_attempts,
            heartbeat_interval=args.heartbeat_interval,
        )
    except ValueError as exc:
        print(f"listen: {exc}", file=err)
        return 2

    def note(text: str) -> None:
        print(f"listen: {clean(text)}", file=err, flush=True)

    def on_state(state: ClientState) -> None:
        if state is ClientState.OPEN:
            info = client.connection_info
            note(f"connected to {args.url} (connection {info.get('connection_id', '?')})")
            session = info.get("session")
            if isinstance(session, dict):
                note(
                    f"session {session.get('id')} "
                    + ("resumed" if session.get("resumed") else "new")
                )
        elif state is ClientState.RECONNECTING:
            note("connection lost; reconnecting")

    client.on("client_state", on_state)
    fmt = format_json if args.json else format_row
    work = asyncio.create_task(_consume(client, args, out, fmt, note))
    stopper = asyncio.create_task(stop.wait())
    code = 0
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not work.done():
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            code = await work
        await client.close()
    if stop.is_set():
        note("stopped")
        return 0
    return code


async def _consume(
    client: RealtimeClient,
    args: argparse.Namespace,
    out: TextIO,
    fmt: Callable[[Event[Any] | RecoveryFailed], str],
    note: Callable[[str], None],
) -> int:
    try:
        note(f"connecting to {args.url}")
        await client.connect()
        sub = await client.subscribe(
            args.subscription_type,
            match_ids=args.match_ids,
            leagues=args.leagues,
            min_confidence=args.min_confidence,
            event_types=args.event_types,
            snapshot=args.snapshot,
        )
        note(
            f"subscribed {sub.server_id} {sub.subscription_type or '-'} "
            f"event_types={','.join(sub.event_types)} filters={orjson.dumps(sub.filters).decode()}"
        )
        async for item in client:
            try:
                out.write(fmt(item) + "\n")
                out.flush()
            except BrokenPipeError:
                # The reader of our output went away (e.g. `| head`): stop quietly.
                with contextlib.suppress(OSError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
                return 0
        return 0
    except RequestError as exc:
        note(f"the server refused the subscription: {exc}")
        return 2
    except ClientClosed as exc:
        note(f"stopped: {exc}")
        return 1
