"""``uvicorn football_realtime.main:app``: the service configured from the environment."""

from .app import create_app

app = create_app()
