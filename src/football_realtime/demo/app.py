"""The demo app: the realtime service, the simulated business services publishing into
it in-process, a token endpoint for a paid and a free viewer, and the dashboard.

It is built the way a platform mounts the service into its own FastAPI app (see
``football_realtime.app``): the service's router under ``/realtime``, its lifespan
wrapped by the app's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import jwt
from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .._version import __version__
from ..app import Realtime
from ..config import Settings
from ..core.events import EventType
from ..core.permissions import TierPolicy
from .clock import RealClock
from .delayed_state import DelayedState
from .publishers import InProcessPublisher
from .runner import Runner
from .simulation import SimConfig, Simulation

log = logging.getLogger("football_realtime.demo")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
JWT_ALGORITHM = "HS256"
Tier = Literal["free", "premium"]


@dataclass(frozen=True)
class DemoOptions:
    sim: SimConfig = field(default_factory=SimConfig)
    seed: int | None = None
    #: Signs the viewers' tokens; the service must verify with the same secret
    #: (REALTIME_JWT_SECRET).
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    token_ttl_seconds: int = 12 * 3600
    static_dir: Path = STATIC_DIR


def demo_tiers(free_delay: float, free_odds_interval: float) -> dict[str, dict[str, Any]]:
    """The demo's tier policy: a free viewer gets predictions without the model's value
    and strategy, the match feed ``free_delay`` seconds late, and at most one odds
    update per match and bookmaker every ``free_odds_interval`` seconds; a premium
    viewer gets everything live (docs/demo.md)."""
    return {
        "free": {
            "event_types": [
                "prediction_created",
                "match_started",
                "match_score_changed",
                "match_status_changed",
                "match_ended",
                "odds_updated",
            ],
            "hidden_fields": {"predictions": ["expected_value", "strategy"]},
            "delay_seconds": {"matches": free_delay},
            "min_interval_seconds": {"odds_updated": free_odds_interval},
        },
        "premium": {},
    }


def sign_viewer_token(secret: str, tier: Tier, ttl_seconds: int) -> dict[str, Any]:
    now = int(time.time())
    user_id = f"viewer-{tier}-{secrets.token_hex(3)}"
    claims = {
        "user_id": user_id,
        "sub": user_id,
        "tier": tier,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    token = jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)
    return {"token": token, "user_id": user_id, "tier": tier, "expires_at": now + ttl_seconds}


def _tier_of(secret: str, token: str | None) -> Tier:
    if not token:
        return "free"
    try:
        claims = jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise HTTPException(401, "token expired; get a new one from /demo/token") from None
    except jwt.InvalidTokenError as exc:
        raise HTTPException(401, f"invalid token: {exc}") from None
    return "premium" if claims.get("tier") == "premium" else "free"


class Demo:
    """The simulation and its runner, owned by the demo app's lifespan."""

    def __init__(self, realtime: Realtime, options: DemoOptions) -> None:
        self.options = options
        # Sign with the secret the service verifies with, when it has one configured.
        configured = getattr(realtime.settings, "jwt_secret", None)
        self.jwt_secret: str = (
            configured.get_secret_value() if configured is not None else options.jwt_secret
        )
        self.clock = RealClock()
        seed = options.seed if options.seed is not None else secrets.randbits(32)
        self.seed = seed
        self.sim = Simulation(options.sim, random.Random(seed), self.clock.wall)
        self.runner = Runner(self.sim, InProcessPublisher(realtime), self.clock)
        self._task: asyncio.Task[None] | None = None
        # The free viewer's REST state lags as its match feed does (whatever the tiers
        # say: the demo's own, or the operator's REALTIME_TIERS).
        s = realtime.settings
        policy = TierPolicy.from_config(s.tiers, s.default_tier)
        free = policy.get("free")
        delay = free.timeliness.delay(EventType.MATCH_SCORE_CHANGED) if free else 0.0
        self.free_timeliness: dict[str, Any] = (
            free.timeliness.describe() if free else {"delay_seconds": {}}
        )
        self.free_state: DelayedState | None = DelayedState(delay) if delay > 0 else None
        self._sampler: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.runner.run(), name="demo-simulator")
        self._task.add_done_callback(self._on_done)
        if self.free_state is not None:
            self._sampler = asyncio.create_task(self._sample(self.free_state), name="demo-free")
            self._sampler.add_done_callback(self._on_done)

    async def _sample(self, delayed: DelayedState) -> None:
        while True:
            delayed.record(time.time(), lambda: self.sim.snapshot(premium=False))
            await asyncio.sleep(delayed.every)

    def state(self, premium: bool) -> dict[str, Any]:
        """``/demo/state``: now for a premium viewer; for a free one, as its tier sees
        the world (its match feed's delay ago)."""
        snap = None
        if not premium and self.free_state is not None:
            snap = self.free_state.as_of(time.time())
        snap = self.sim.snapshot(premium=premium) if snap is None else dict(snap)
        if not premium:
            snap["timeliness"] = self.free_timeliness
        return snap

    @staticmethod
    def _on_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("demo simulator stopped", exc_info=task.exception())

    async def stop(self) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        task, self._task = self._task, None
        if task is not None:
            self.runner.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _demo_router(demo: Demo) -> APIRouter:
    router = APIRouter(tags=["demo"])
    secret = demo.jwt_secret

    @router.get("/token", summary="Sign a token for a demo viewer")
    async def token(tier: Tier = "premium") -> dict[str, Any]:
        """A JWT (claims ``user_id``, ``tier``, ``exp``) for a paid (``premium``) or a
        ``free`` viewer, signed with the demo's secret; pass it to the WebSocket as the
        ``token`` query parameter."""
        return sign_viewer_token(secret, tier, demo.options.token_ttl_seconds)

    @router.get("/state", summary="Current fixtures (and, for premium, predictions)")
    async def state(
        token: Annotated[str | None, Query(max_length=4096)] = None,
    ) -> dict[str, Any]:
        """What a dashboard loads before following live events. Without a token, or
        with a free viewer's, the free view: as the free tier sees it, its match feed's
        delay ago (``timeliness`` says how late), so REST shows no score earlier than
        the WebSocket does."""
        tier = _tier_of(secret, token)
        snap = demo.state(premium=tier == "premium")
        snap["seed"] = demo.seed
        snap["simulator"] = demo.runner.stats()
        return snap

    return router


_MISSING_DASHBOARD = """<!doctype html><meta charset="utf-8"><title>football-realtime demo</title>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>Dashboard not built</h1>
<p>The dashboard's files are missing from <code>{path}</code>. Build them with
<code>npm --prefix dashboard ci &amp;&amp; npm --prefix dashboard run build</code>
(or run <code>scripts/setup</code>). The service itself is running:
<a href="/realtime/health">/realtime/health</a>, <a href="/docs">/docs</a>.</p>"""


def create_demo_app(
    settings: Settings | None = None, options: DemoOptions | None = None
) -> FastAPI:
    """The service, the simulated business services, and the dashboard at ``/``."""
    options = options if options is not None else DemoOptions()
    realtime = Realtime(settings)
    demo = Demo(realtime, options)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with realtime.lifespan(app):
            demo.start()
            try:
                yield
            finally:
                await demo.stop()

    app = FastAPI(
        title="football-realtime demo",
        version=__version__,
        description="The realtime service with simulated data, prediction, odds and "
        "notification services, and a live dashboard at /.",
        lifespan=lifespan,
    )
    app.state.realtime = realtime
    app.state.demo = demo
    # The dashboard's script is ~275 KB, ~87 KB compressed. HTTP only: WebSockets pass through.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.include_router(realtime.router, prefix="/realtime")
    app.include_router(_demo_router(demo), prefix="/demo")
    if (options.static_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=options.static_dir, html=True), name="dashboard")
    else:
        page = _MISSING_DASHBOARD.format(path=options.static_dir)

        @app.get("/", include_in_schema=False)
        async def missing_dashboard() -> HTMLResponse:
            return HTMLResponse(page, status_code=503)

    return app
