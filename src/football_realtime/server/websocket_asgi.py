"""The ASGI WebSocket interface towards the app (``receive``, ``send``), and the HTTP
answers sent instead of accepting (the app's own response, 403, 500).

One access-log line per handshake, following uvicorn's ``access_log`` setting.
"""

from __future__ import annotations

import logging
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.http11 import Response

from .websocket_frames import FrameReader

access_logger = logging.getLogger("uvicorn.error")


class ClientDisconnected(OSError):
    """``send`` on a connection that is gone (ASGI: a server-specific ``OSError``)."""


class AsgiBridge(FrameReader):
    __slots__ = ()

    # -- HTTP answers instead of accepting ---------------------------------------

    def _refuse(self, output: bytes) -> None:
        self.handshake_complete = self.close_sent = True
        self.transport.write(output)
        self.transport.close()

    def _respond(self, response: Response) -> None:
        """Send an HTTP response instead of accepting, and close."""
        conn = self.conn
        assert conn is not None
        conn.send_response(response)
        self.response = None
        self._refuse(b"".join(conn.data_to_send()))

    async def run_asgi(self) -> None:
        layer = self.layer
        scope = self.scope
        assert scope is not None
        app = layer.routes.get(scope["path"]) or layer.app
        try:
            result = await app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            access_logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                access_logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                access_logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None:
            self.transport.close()

    def send_500_response(self) -> None:
        conn = self.conn
        if self.initial_response or self.handshake_complete or conn is None:
            return
        if conn.close_expected():  # a response was sent already
            return
        conn.send_response(conn.reject(500, "Internal Server Error"))
        self.transport.write(b"".join(conn.data_to_send()))

    async def receive(self) -> Any:
        message = await self.inbox.get()
        if self.read_paused and self.inbox.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    def _handshake_line(self, outcome: str) -> None:
        # One per handshake: an access-log line, so it follows ``access_log``.
        if self.layer.access_log:
            scope = self.scope
            assert scope is not None
            client = scope.get("client")
            path = scope["raw_path"].decode("latin1")
            if scope["query_string"]:
                path = f"{path}?{scope['query_string'].decode('ascii')}"
            access_logger.info(
                '%s - "WebSocket %s" %s',
                f"{client[0]}:{client[1]}" if client else "",
                path.replace('"', "%22"),
                outcome,
            )

    async def send(self, message: Any) -> None:
        writable = self.writable
        if writable is not None and not writable.is_set():
            await writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        kind = message["type"]
        conn = self.conn
        assert conn is not None
        if not self.handshake_complete and self.initial_response is None:
            if kind == "websocket.accept":
                self._handshake_line("[accepted]")
                response = self.response
                assert response is not None
                layer = self.layer
                headers = layer.response_headers + [
                    (name.decode("latin-1").lower(), value.decode("latin-1"))
                    for name, value in message.get("headers", [])
                ]
                subprotocol = message.get("subprotocol")
                if subprotocol:
                    headers.append(("Sec-WebSocket-Protocol", subprotocol))
                if not layer.date_header:
                    del response.headers["Date"]
                response.headers.update(headers)
                self.response = None  # sent; not needed any more
                if not self.transport.is_closing():
                    self.handshake_complete = True
                    conn.send_response(response)
                    self.transport.write(b"".join(conn.data_to_send()))
                    self.start_keepalive()
            elif kind == "websocket.close":
                # Closing before accepting: HTTP 403.
                self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
                self._handshake_line("403")
                self._respond(conn.reject(HTTPStatus.FORBIDDEN, ""))
            elif kind == "websocket.http.response.start" and self.initial_response is None:
                status = message["status"]
                if not (100 <= status < 600):
                    raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
                self._handshake_line(str(status))
                headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in list(message.get("headers", []))
                ]
                self.initial_response = (status, headers, b"")
                self.handshake_complete = True
                self.response = None
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' "
                    f"or 'websocket.http.response.start' but got '{kind}'."
                )
        elif not self.close_sent and self.initial_response is None:
            try:
                if kind == "websocket.send":
                    data = message.get("bytes")
                    if data is not None:
                        conn.send_binary(data)
                    else:
                        text = message.get("text")
                        if text is not None:
                            conn.send_text(text.encode())
                    self.transport.write(b"".join(conn.data_to_send()))
                elif kind == "websocket.close":
                    if not self.transport.is_closing():
                        code = message.get("code", 1000)
                        reason = message.get("reason", "") or ""
                        self.inbox.put_nowait(
                            {"type": "websocket.disconnect", "code": code, "reason": reason}
                        )
                        conn.send_close(code, reason)
                        self.transport.write(b"".join(conn.data_to_send()))
                        self.close_sent = True
                        if self.read_paused:
                            self.read_paused = False
                            self.transport.resume_reading()
                        self.close_timer = self.layer.loop.call_later(
                            self.layer.close_timeout, self.transport.close
                        )
                else:
                    raise RuntimeError(
                        "Expected ASGI message 'websocket.send' or 'websocket.close', "
                        f"but got '{kind}'."
                    )
            except InvalidState:
                raise ClientDisconnected() from None
        elif self.initial_response is not None:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
                )
            status, headers, body = self.initial_response
            body += message["body"]
            self.initial_response = (status, headers, body)
            if not message.get("more_body", False):
                head = Headers(headers)
                head.setdefault("Date", formatdate(usegmt=True))
                head.setdefault("Connection", "close")
                head.setdefault("Content-Length", str(len(body)))
                head.setdefault("Content-Type", "text/plain; charset=utf-8")
                try:
                    phrase = HTTPStatus(status).phrase
                except ValueError:
                    phrase = ""
                self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
                self._respond(Response(status, phrase, head, body))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )


__all__ = ["AsgiBridge", "ClientDisconnected", "access_logger"]
