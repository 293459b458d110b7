"""The transport as a wrapped protocol sees it, until the connection is handed over."""

from __future__ import annotations

import asyncio
from typing import Any


class TransportView(asyncio.Transport):
    """The transport as the wrapped HTTP protocol sees it: every call goes to the real
    transport until the connection is handed to another protocol (``set_protocol``),
    then writes and closes are no-ops (the connection is no longer that protocol's)."""

    __slots__ = ("cut", "real")

    def __init__(self, real: asyncio.Transport) -> None:
        super().__init__()
        self.real = real
        self.cut = False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.real.set_protocol(protocol)
        self.cut = True

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.real.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.real.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.cut or self.real.is_closing()

    def close(self) -> None:
        if not self.cut:
            self.real.close()

    def abort(self) -> None:
        if not self.cut:
            self.real.abort()

    def write(self, data: Any) -> None:
        if not self.cut:
            self.real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if not self.cut:
            self.real.writelines(list_of_data)

    def write_eof(self) -> None:
        if not self.cut:
            self.real.write_eof()

    def can_write_eof(self) -> bool:
        return self.real.can_write_eof()

    def is_reading(self) -> bool:
        return self.real.is_reading()

    def pause_reading(self) -> None:
        if not self.cut:
            self.real.pause_reading()

    def resume_reading(self) -> None:
        if not self.cut:
            self.real.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.real.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.real.get_write_buffer_limits()


__all__ = ["TransportView"]
