"""``football-realtime demo``: the service, the simulated services and the dashboard in
one process; or, with ``--publisher-only``, the simulated services publishing into a
service that is already running."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import sys
from typing import Any

from pydantic import ValidationError

from ..config import Settings
from .simulation import SimConfig

DEFAULT_URL = "http://127.0.0.1:8000"


def add_demo_parser(sub: Any) -> None:
    from ..settings_cli import add_settings_arguments

    p = sub.add_parser(
        "demo",
        help="run the service with simulated football services and the live dashboard",
        description=__doc__,
    )
    p.add_argument("--matches", type=int, default=6, help="concurrent fixtures (default 6)")
    p.add_argument(
        "--speed",
        type=float,
        default=30.0,
        help="simulated seconds per real second (default 30: a 90-minute match in 3 minutes)",
    )
    p.add_argument("--seed", type=int, help="random seed for a reproducible run")
    p.add_argument(
        "--broker",
        dest="broker_url",
        default=None,
        help="broker URL, e.g. redis://127.0.0.1:6379/0 (same as --broker-url)",
    )
    p.add_argument(
        "--publisher-only",
        action="store_true",
        help="only run the simulated services, publishing to --url over HTTP",
    )
    p.add_argument(
        "--url", default=DEFAULT_URL, help=f"service to publish into (default {DEFAULT_URL})"
    )
    p.add_argument(
        "--admin-token",
        help="admin token of that service (default: $REALTIME_ADMIN_TOKEN, which is better: command lines show in ps)",
    )
    p.add_argument(
        "--free-delay",
        type=float,
        default=30.0,
        help="seconds the free viewer's match feed (scores, status) lags (default 30; "
        "0: live); ignored when REALTIME_TIERS or --tiers gives the tiers",
    )
    p.add_argument(
        "--free-odds-interval",
        type=float,
        default=10.0,
        help="the free viewer gets at most one odds update per match and bookmaker per "
        "this many seconds (default 10; 0: every update)",
    )
    # The same settings flags as `serve` (--host, --port, --broker-url, ...).
    add_settings_arguments(p)


def _sim_config(args: argparse.Namespace) -> SimConfig | None:
    try:
        return SimConfig(matches=args.matches, speed=args.speed)
    except ValueError as exc:
        print(f"football-realtime demo: {exc}", file=sys.stderr)
        return None


def run_demo(args: argparse.Namespace) -> int:
    sim = _sim_config(args)
    if sim is None:
        return 2
    if args.publisher_only:
        return _publisher_only(args, sim)
    return _embedded(args, sim)


def demo_settings(args: argparse.Namespace, jwt_secret: str | None = None) -> Settings:
    """The service's settings for ``demo``: its flags over REALTIME_* variables; no
    access log unless asked for (the dashboard polls); the viewers' token secret."""
    from ..settings_cli import flag_overrides

    overrides = flag_overrides(args)
    overrides.setdefault("access_log", False)
    if "tiers" not in overrides and "REALTIME_TIERS" not in os.environ:
        from .app import demo_tiers

        overrides["tiers"] = demo_tiers(
            getattr(args, "free_delay", 30.0), getattr(args, "free_odds_interval", 10.0)
        )
    if jwt_secret is not None:
        # The service verifies the viewers' tokens with the secret the demo signs them with.
        overrides["jwt_secret"] = jwt_secret
    return Settings(**overrides)


def _embedded(args: argparse.Namespace, sim: SimConfig) -> int:
    from ..serve import serve
    from .app import DemoOptions, create_demo_app

    # REALTIME_JWT_SECRET if set (the service reads it too), else one for this run.
    given = os.environ.get("REALTIME_JWT_SECRET")
    secret = given or secrets.token_urlsafe(32)
    from ..settings_cli import EXIT_INVALID_CONFIG, explain_invalid, flag_overrides

    try:
        settings = demo_settings(args, None if given else secret)
    except ValidationError as exc:
        for line in explain_invalid(exc, flag_overrides(args)):
            print(line, file=sys.stderr)
        return EXIT_INVALID_CONFIG
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    try:
        app = create_demo_app(settings, DemoOptions(sim=sim, seed=seed, jwt_secret=secret))
    except ValueError as exc:  # e.g. a broker URL this build cannot serve
        print(f"football-realtime demo: {exc}", file=sys.stderr)
        return 2
    local = ("127.0.0.1", "0.0.0.0", "::", "localhost")
    shown = "localhost" if settings.host in local else settings.host
    print(
        f"football-realtime demo: dashboard at http://{shown}:{settings.port}/  "
        f"(seed {seed}, {sim.matches} matches, speed x{sim.speed:g}, "
        f"broker {settings.broker_url})",
        file=sys.stderr,
        flush=True,
    )
    serve(settings, app=app)
    return 0


def _publisher_only(args: argparse.Namespace, sim: SimConfig) -> int:
    token = args.admin_token or os.environ.get("REALTIME_ADMIN_TOKEN")
    if not token:
        print(
            "football-realtime demo --publisher-only needs the service's admin token: "
            "--admin-token or REALTIME_ADMIN_TOKEN",
            file=sys.stderr,
        )
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(
        f"football-realtime demo: publishing into {args.url} "
        f"(seed {seed}, {sim.matches} matches, speed x{sim.speed:g}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        return asyncio.run(_publish_forever(args.url, token, sim, seed))
    except KeyboardInterrupt:
        return 0


async def _publish_forever(url: str, token: str, sim_config: SimConfig, seed: int) -> int:
    from .clock import RealClock
    from .publishers import HttpPublisher, PublishRefused
    from .runner import Runner
    from .simulation import Simulation

    clock = RealClock()
    publisher = HttpPublisher(url, token)
    runner = Runner(Simulation(sim_config, random.Random(seed), clock.wall), publisher, clock)
    try:
        await runner.run()
    except PublishRefused as exc:
        print(f"football-realtime demo: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            await publisher.close()
    return 0  # pragma: no cover - run() only returns with max_ticks
