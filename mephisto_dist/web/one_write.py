"""uvicorn's HTTP protocol with the writes of one event-loop step sent together: an answer's head and body
go out in one ``write`` (one system call, one TCP segment) instead of two.

uvicorn writes the head when the app sends ``http.response.start`` and the body at ``http.response.body``;
uvloop sends each at once. Every request of the hot path (``/request_agent``, ``/submit_task``, the task's
two files) thus cost two ``write`` calls, the largest single part of the event loop's own CPU per unit
(a sixth of its samples, issue 23). Here the transport uvicorn writes to keeps what a step wrote and sends
it once the step ends (``call_soon``), or at once when the connection is closed, shut or written past
``HOLD_BYTES``. Nothing is reordered and nothing waits on anything but the end of the running step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOLD_BYTES = 256 * 1024
"""More than this held is written at once (a large body gains nothing from waiting)."""


class OneWriteTransport(asyncio.Transport):
    """The connection's transport, with ``write`` held to the end of the event loop's step. Everything else
    is the transport's own; ``close``, ``write_eof`` and ``set_protocol`` send what is held first, ``abort``
    drops it (as the transport drops its own buffer)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._held_bytes += len(data)
        if self._held_bytes > HOLD_BYTES:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is held (nothing when the connection is already closing: the transport would refuse)."""
        if not self._held:
            return
        held = self._held
        self._held = []
        self._held_bytes = 0
        if self._transport.is_closing():
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._transport.get_write_buffer_size()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._held = []
        self._held_bytes = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


class OneWriteHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (``http="httptools"``) writing through :class:`OneWriteTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))
