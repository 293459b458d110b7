"""A round-robin TCP proxy in front of service instances (tests and bench/soak.py).

Each new connection goes to the next port in turn that accepts it (a refused port is
skipped), so a client that loses one instance reconnects to another through the same
URL; :meth:`Proxy.abort` cuts client connections abruptly (RST, no close frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import random


class Proxy:
    """Round robin over the instances' ports; each connection piped both ways."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.next = 0
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for _ in range(len(self.ports)):
            port = self.ports[self.next % len(self.ports)]
            self.next += 1
            with contextlib.suppress(OSError, TimeoutError):
                upstream = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
                break
        if upstream is None:
            writer.transport.abort()
            return
        ur, uw = upstream
        pair = (writer, uw)
        self.pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, uw), self._pipe(ur, writer))
        finally:
            self.pairs.discard(pair)
            for w in pair:
                w.transport.abort()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.write_eof()  # half-close: what was sent is delivered, then EOF
        except (OSError, RuntimeError):
            dst.transport.abort()

    def abort(self, n: int) -> int:
        """Abort ``n`` random client connections (no close frame, no FIN: RST)."""
        chosen = random.sample(sorted(self.pairs, key=id), min(n, len(self.pairs)))
        for down, up in chosen:
            down.transport.abort()
            up.transport.abort()
        return len(chosen)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for down, up in list(self.pairs):
            down.transport.abort()
            up.transport.abort()
