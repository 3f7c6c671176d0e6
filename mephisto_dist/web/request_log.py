"""What the web process records of every HTTP request once its answer has gone out (or failed): one
access-log line (method, path, status, time taken) and one observation of the request-latency histogram
(``mephisto_dist.metrics``), from one timing."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mephisto_dist.metrics import endpoint_of, instruments

log = logging.getLogger("mephisto_dist.web.access")


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
            log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed_s * 1000)

    def observer(self, path: str) -> Any:
        endpoint = endpoint_of(path)
        child = self.observers.get(endpoint)
        if child is None:
            child = self.observers[endpoint] = self.histogram.labels(endpoint)
        return child
