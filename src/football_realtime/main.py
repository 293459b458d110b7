"""``uvicorn football_realtime.main:app``: the service configured from the environment.

Logging follows REALTIME_LOG_FORMAT / REALTIME_LOG_LEVEL here too (uvicorn's loggers
are routed through the same handler); ``football-realtime serve`` does the same and
also applies the WebSocket settings to uvicorn, so prefer it.

With ``--workers N`` (or gunicorn's ``-w N``) the broker must be Redis: on ``memory://``
every worker after the first refuses to start (``sole_process.py``); ``football-realtime
serve --workers N`` is the way to use every core (docs/scaling.md).
"""

from .app import create_app
from .config import Settings
from .logs import configure_logging

settings = Settings()
configure_logging(settings)
app = create_app(settings)
