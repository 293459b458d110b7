"""Run the service in this process: logging, garbage-collector tuning, and uvicorn with
the server options we ship (``server/config.py``)."""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import sys
from typing import Any

import uvicorn

from . import logredact
from .app import create_app
from .config import Settings
from .logs import configure_logging
from .server import uvicorn_config

log = logging.getLogger("football_realtime.serving")


def tune_gc() -> None:
    """Keep the cyclic garbage collector's work per accepted connection low without
    long pauses.

    Everything built at start-up (FastAPI, pydantic models, the app) lives as long as the
    process: freezing it keeps collections from re-scanning it. The first threshold goes
    from 700 to 10,000 allocations: with CPython's defaults, full collections ran about
    ten times while 10,000 connections were accepted, each pausing the loop up to 350 ms
    (the heap grows by a quarter between them); with 10,000 a young collection pauses
    ~2 ms, an older one ~40 ms at 10,000 connections, and accepting costs ~100 µs less.
    Larger thresholds save a little more per accept but let one collection scan up to a
    million objects (a 250 ms pause). Measured in docs/performance.md.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def serve(
    settings: Settings,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    app: Any = None,
) -> None:
    """Run ``app`` (default: the plain service) with the settings' server options."""
    configure_logging(settings)
    server = _server(settings, ssl_certfile, ssl_keyfile, app)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run does


def serve_on(
    settings: Settings,
    sockets: list[socket.socket],
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> int:
    """Run the service on ``sockets`` (bound, not yet listening: uvicorn listens once the
    app has started), for a worker of ``serve --workers``; its exit status: 3 (uvicorn's
    STARTUP_FAILURE) if it never started serving, whatever stopped it (uvicorn exits
    the process on a failed lifespan, a bad certificate raises), 1 if it failed later."""
    server: uvicorn.Server | None = None
    failed = False
    try:
        server = _server(settings, ssl_certfile, ssl_keyfile, None)
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=sockets)
    except SystemExit as exc:
        failed = exc.code not in (0, None)
    except Exception:
        log.exception("worker failed")
        failed = True
    if server is None or not server.started:
        return 3
    return 1 if failed else 0


def _server(
    settings: Settings, ssl_certfile: str | None, ssl_keyfile: str | None, app: Any
) -> uvicorn.Server:
    routes = None
    if app is None:
        app = create_app(settings)
        # The service's own WebSocket routes, called directly by our WebSocket layer.
        routes = app.state.realtime.ws_routes()
    tune_gc()
    config = uvicorn_config(
        app,
        settings,
        routes=routes,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_config=None,  # keep the handler configure_logging installed
    )
    logredact.install()  # after logging is configured: tokens never reach a log
    return uvicorn.Server(config)


__all__ = ["serve", "serve_on", "tune_gc"]
