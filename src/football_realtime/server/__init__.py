"""The server edge: our uvicorn protocols, on public interfaces only.

* ``websocket_protocol``: the WebSocket layer (and the modules it is built from) (``uvicorn.Config(ws=...)``), an
  ``asyncio.Protocol`` on websockets' sans-I/O ``ServerProtocol``, with the fast path
  the service uses (``connection.FrameTransport``);
* ``http_protocol``: uvicorn's httptools protocol, wrapped with a deadline and a size
  limit for request headers (``uvicorn.Config(http=...)``);
* ``config``: the uvicorn configuration ``serve`` and the tests use.
"""

from .config import GracefulShutdown, http_protocol, uvicorn_config, ws_protocol
from .websocket_protocol import ClientDisconnected, WebSocketLayer, WebSocketProtocol

__all__ = [
    "ClientDisconnected",
    "GracefulShutdown",
    "WebSocketLayer",
    "WebSocketProtocol",
    "http_protocol",
    "uvicorn_config",
    "ws_protocol",
]
