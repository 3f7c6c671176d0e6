"""What the web process records of every HTTP request once its answer has gone out (or failed): one
access-log line (method, path, status, time taken) and one observation of the request-latency histogram
(``mephisto_dist.metrics``), from one timing.

The line goes through ``logging`` (logger ``mephisto_dist.web.access``), except in a web process that
``web.server.serve`` set up: there it is written by :class:`AccessLines`, which formats the same text as
the process's log formatter and writes what a tenth of a second gathered in one write. A log record per
request (its creation, the handler's lock, a formatter, a write and a flush of stderr) was about a
fourteenth of a web process's CPU per unit (issue 23: 0.14 of 2.03 ms, measured by turning it off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mephisto_dist.metrics import endpoint_of, instruments

log = logging.getLogger("mephisto_dist.web.access")

GATHER_S: Final = 0.1
"""How long lines gather before they are written: what a process killed outright can lose of its log."""
MAX_GATHERED: Final = 512
"""Lines written at once at most (a burst is written as it comes, not held in memory)."""


class AccessLines:
    """The access log of a web process ``serve`` set up: lines formatted as ``web.server.LogFormatter``
    formats a record of ``log`` (``LOG_FORMAT``: time with milliseconds, logger, level, message), kept
    for at most ``GATHER_S`` and written to ``stream`` together. Used from the event loop only; ``flush``
    also from the thread that stops the server (after the loop)."""

    def __init__(self, stream: TextIO, stamp: Callable[[float], str], clock: Callable[[], float] = time.time) -> None:
        self._stream = stream
        self._stamp = stamp  # the formatter's date and time of a record made then (LogFormatter.stamp)
        self._clock = clock
        self._lines: list[str] = []
        self._prefix = f" {log.name} {logging.getLevelName(logging.INFO)} "

    def add(self, method: str, path: str, status: int, elapsed_s: float) -> None:
        self._lines.append(f"{self._stamp(self._clock())}{self._prefix}{method} {path} {status} "
                           f"{elapsed_s * 1000:.1f}ms\n")
        if len(self._lines) == 1:
            asyncio.get_running_loop().call_later(GATHER_S, self.flush)
        elif len(self._lines) >= MAX_GATHERED:
            self.flush()

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            self._stream.write("".join(lines))
            self._stream.flush()
        except (OSError, ValueError):  # stderr gone (closed, a full pipe's reader dead): as logging's handler
            pass


ACCESS_LINES: AccessLines | None = None
"""Set by ``web.server.serve`` for its process; None: lines go through ``logging``."""


def write_lines_to(stream: TextIO, stamp: Callable[[float], str]) -> AccessLines:
    """Write this process's access log with :class:`AccessLines` (``web.server.serve``)."""
    global ACCESS_LINES
    ACCESS_LINES = AccessLines(stream, stamp)
    return ACCESS_LINES


def flush_lines() -> None:
    """Write what the access log gathered (the server stopping)."""
    if ACCESS_LINES is not None:
        ACCESS_LINES.flush()


class RequestLog:
    """ASGI middleware, the outermost of the app's own: one layer and one ``send`` wrapper per request for
    both records (each cost a share of a web process's CPU of its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.histogram = instruments().request_seconds
        # The histogram's child per endpoint label, made on first use: labels() costs a lock and a lookup.
        self.observers: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before its answer starts

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            elapsed_s = time.perf_counter() - started
            self.observer(scope["path"]).observe(elapsed_s)
            if log.isEnabledFor(logging.INFO):
                lines = ACCESS_LINES
                if lines is not None:
                    lines.add(scope["method"], scope["path"], status, elapsed_s)
                else:
                    log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed_s * 1000)

    def observer(self, path: str) -> Any:
        endpoint = endpoint_of(path)
        child = self.observers.get(endpoint)
        if child is None:
            child = self.observers[endpoint] = self.histogram.labels(endpoint)
        return child
