"""Request latency per endpoint into the Prometheus histogram (``mephisto_dist.metrics``)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from mephisto_dist.metrics import endpoint_of, instruments


class RequestMetrics:
    """ASGI middleware: one histogram observation per HTTP request, from arrival to the answer's end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.histogram = instruments().request_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.histogram.labels(endpoint_of(scope["path"])).observe(time.perf_counter() - started)
