"""What every route handler reaches through its request: the served run's services and where to run
their blocking work."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from mephisto_dist.web.frontend import RenderedFrontend
from mephisto_dist.web.served_files import ServedFiles
from mephisto_dist.work.claims import RunContext
from mephisto_dist.work.served import Served

P = ParamSpec("P")
T = TypeVar("T")

SQLITE_THREADS = 2


@dataclass(frozen=True)
class WebContext:
    """The event loop only does I/O: every database transaction, task hook and blocking Redis or Celery
    call of a request runs on a worker thread (``call``), on SQLite as on PostgreSQL, so one slow hook or
    lock wait holds its own request, never the other requests and live sockets of the process."""

    served: Served
    # Threads for the hot path's database work. PostgreSQL writes concurrently: a few threads
    # (settings.web_threads), more only contend for the GIL and the database. SQLite takes one writer at a
    # time (the engine's writer lock): SQLITE_THREADS let a read go on while a write waits for it.
    hot_threads: int = 4
    _hot: CapacityLimiter = field(init=False, repr=False, compare=False)
    frontend: RenderedFrontend = field(default_factory=RenderedFrontend, repr=False, compare=False)
    files: ServedFiles = field(default_factory=ServedFiles, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hot", CapacityLimiter(self.hot_threads))

    @property
    def max_body_bytes(self) -> int:
        return self.served.runtime.settings.max_upload_bytes

    async def run(self) -> RunContext:
        """The run served: the resolver's cached one when fresh (no thread), else read in a thread."""
        run = self.served.cached_run()
        return run if run is not None else await self.call_in_thread(self.served.run)

    async def call(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a hot-path service function on one of the hot path's threads."""
        return await anyio.to_thread.run_sync(functools.partial(work, *args, **kwargs), limiter=self._hot)

    async def call_in_thread(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run work that may be slow whatever the database (the task's own code, file copies)."""
        return await run_in_threadpool(work, *args, **kwargs)


def context_of(connection: HTTPConnection) -> WebContext:
    context: WebContext = connection.app.state.context
    return context
