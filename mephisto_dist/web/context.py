"""What every route handler reaches through its request: the served run's services, where to run
their blocking work, and how long to wait out an outage of the database or Redis before answering.

A restart or a failover of the database costs a few seconds in which every call fails to connect. A
worker who is answered 503 then may lose their work, so a call that failed that way (``is_outage``) is
made again, backing off, for up to ``settings.outage_wait_s``; only a longer outage reaches the worker.
Making a call again is safe only for work whose repeat changes nothing: every call here is such work
(a registration is keyed by its id, a submission is a compare-and-set whose repeat is "Already submitted"),
except what goes through :meth:`WebContext.call_once_in_thread`.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from mephisto_dist.db.engine import WriterBusy, holding_connections, without_waiting
from mephisto_dist.errors import ServiceError
from mephisto_dist.errors.drivers import is_outage, translate
from mephisto_dist.limiter import Acquired
from mephisto_dist.limiter.redis_pool import AsyncSwap
from mephisto_dist.web.frontend import RenderedFrontend
from mephisto_dist.web.hot_threads import HotThreads
from mephisto_dist.web.served_files import ServedFiles
from mephisto_dist.work.claims import RunContext
from mephisto_dist.work.served import AfterCommit, Served, finished

if TYPE_CHECKING:
    from mephisto_dist.db.async_statements import AsyncStatements

P = ParamSpec("P")
T = TypeVar("T")

SQLITE_THREADS = 2
SQLITE_SPARE_AFTER_S = 0.05
"""On SQLite the second hot thread is a spare: started when a call has waited this long for the first
(``HotThreads``' ``spare_after_s``)."""

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.1
LONGEST_RETRY_S = 2.0


def retry_delay_s(attempt: int, jitter: float) -> float:
    """The pause before call number ``attempt + 1`` after ``attempt`` failed ones: doubling from
    ``FIRST_RETRY_S`` up to ``LONGEST_RETRY_S``, spread by ``jitter`` (0..1) so the requests that waited
    together do not all reach the database in the same instant when it is back."""
    return min(LONGEST_RETRY_S, FIRST_RETRY_S * 2.0 ** (attempt - 1)) * (0.75 + 0.5 * jitter)


@dataclass(frozen=True)
class WebContext:
    """The event loop waits for nothing: every task hook and blocking call of a request that may wait
    runs on a worker thread, so one slow hook or lock wait holds its own request, never the other
    requests and live sockets of the process.

    The hot path's service functions (``call``) run on the hot threads, except where nothing would wait:
    on SQLite, for a run whose hot path calls nothing but the database (``Served.database_only``: no cap,
    no per-worker limit, no gate, no task code, no runner event), a call runs on the event loop itself
    when SQLite's write lock is free this instant (``db.engine.without_waiting``: this process's writer
    lock taken without waiting, the first BEGIN without SQLite's busy wait), and goes to the hot threads
    when it is not. ``call_split`` (request_agent and submit_task) does the same for a capped run
    (``Served.commits_alone``), its submission's hand-over included: the swap through an async Redis
    client, the next launch's record on the loop when the lock is free. On PostgreSQL, ``call_first``
    sends such a run's claim and submission, one statement each, from the loop through psycopg's async
    connections (``db.async_statements``). Handing the work to a thread cost more than the work (issue 23:
    the GIL passed back and forth at every SQLite call, a third of the web's CPU per unit). Such a call writes in one
    transaction; what the event loop can still wait for is SQLite's checkpoint of its log at a commit
    (milliseconds, every thousand pages written), and the run read again by port (a read: in WAL mode it
    waits for no writer)."""

    served: Served
    # Threads for the hot path's database work. PostgreSQL writes concurrently: a few threads
    # (settings.web_threads), more only contend for the GIL and the database. SQLite takes one writer at a
    # time (the engine's writer lock): SQLITE_THREADS let a call go on while a slow one (a task's hook, a
    # lock held by another process) holds the first thread, the second started only then (spare_after_s).
    hot_threads: int = 4
    spare_after_s: float | None = None
    _hot: HotThreads = field(init=False, repr=False, compare=False)
    frontend: RenderedFrontend = field(default_factory=RenderedFrontend, repr=False, compare=False)
    files: ServedFiles = field(default_factory=ServedFiles, repr=False, compare=False)

    # Whether ``call`` runs on the event loop when SQLite's write lock is free (SQLite only).
    on_loop_when_free: bool = False
    # Per verdict (Served.database_only, Served.commits_alone): the run last judged, and what it was.
    _judged: dict[str, tuple[object, bool]] = field(default_factory=dict, repr=False, compare=False)
    _swap: list[AsyncSwap | None] = field(default_factory=list, repr=False, compare=False)
    # Whether ``call_first`` runs its statement on the event loop (PostgreSQL only).
    statements_on_loop: bool = False
    _statements: list[AsyncStatements] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hot", HotThreads(self.hot_threads, around=holding_connections,
                                                   spare_after_s=self.spare_after_s))

    @property
    def max_body_bytes(self) -> int:
        return self.served.runtime.settings.max_upload_bytes

    async def run(self) -> RunContext:
        """The run served: the resolver's cached one when fresh (no thread), else read in a thread."""
        run = self.served.cached_run()
        return run if run is not None else await self.call_in_thread(self.served.run)

    async def call(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a hot-path service function on one of the hot path's threads; made again across a short
        outage (the module's docstring)."""
        bound = functools.partial(work, *args, **kwargs)
        if not (self.on_loop_when_free and self._database_only()):
            return await self._outlasting(work, lambda: self._hot.run(bound))
        sessions = self.served.runtime.sessions

        async def attempt() -> T:
            try:
                with without_waiting(sessions):
                    return bound()
            except WriterBusy:
                return await self._hot.run(bound)  # the writer that holds the lock is waited for there

        return await self._outlasting(work, attempt)

    async def call_split(self, work: Callable[P, T | AfterCommit[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`call` for a hot-path service function that may hand back the work following its commit
        (``work.served.AfterCommit``: a capped submission's hand-over). On SQLite, for a run whose calls
        talk to nothing but the database up to their commit (``Served.commits_alone``: a cap allowed), the
        call runs on the event loop when SQLite's write lock is free, as :meth:`call` runs a
        ``database_only`` run's; then a hand-over's swap goes to Redis from the loop without blocking it
        (``AsyncSwap``), and the next launch's record is written there too when the swap took the slot
        and the write lock is free. What else follows (a refusal to withdraw, tokens to give back, Redis
        failing, the lock taken) is done on a hot thread. The answer waits for all of it. Anywhere else,
        the whole call on a hot thread, as :meth:`call`."""
        bound = functools.partial(work, *args, **kwargs)

        def whole() -> T:
            return finished(bound())

        if not (self.on_loop_when_free and self._judge(self.served.commits_alone)):
            return await self._outlasting(work, lambda: self._hot.run(whole))
        sessions = self.served.runtime.sessions

        async def attempt() -> T:
            try:
                with without_waiting(sessions):
                    result = bound()
            except WriterBusy:
                return await self._hot.run(whole)
            return await self._finished(result, sqlite_on_loop=True)

        return await self._outlasting(work, attempt)

    async def call_first(self, first: Callable[[AsyncStatements, RunContext], Awaitable[T | AfterCommit[T] | None]],
                         work: Callable[..., T | AfterCommit[T]], *args: object, **kwargs: object) -> T:
        """:meth:`call_split`, but on PostgreSQL, for a run whose calls talk to nothing but the database up
        to their commit (``Served.commits_alone``: a cap allowed), ``first`` (the call's one statement) runs
        on the event loop through psycopg's async connections (``db.async_statements``), and what follows
        its commit as in :meth:`call_split` (the hand-over's swap on the loop, a transaction on a hot
        thread). When ``first`` wrote nothing (None), ``work(*args, tried_alone=True, **kwargs)`` answers
        on a hot thread (a refusal, a repeat, no unit free this instant)."""
        statements = self._async_statements() if self.statements_on_loop else None
        if statements is None or not self._judge(self.served.commits_alone):
            return await self.call_split(work, *args, **kwargs)
        served = self.served

        async def attempt() -> T:
            run = served.cached_run()
            if run is None:  # the resolver's cache lapsed: the run read again, and judged again
                run = await self._hot.run(served.run)
                alone = served.commits_alone(run)
            else:
                alone = self._judge(served.commits_alone)
            result = await first(statements, run) if alone else None
            if result is None:
                return await self._hot.run(lambda: finished(work(*args, tried_alone=True, **kwargs)))
            return await self._finished(result, statements=statements)

        return await self._outlasting(work, attempt)

    async def _finished(self, result: T | AfterCommit[T], *, sqlite_on_loop: bool = False,
                        statements: AsyncStatements | None = None) -> T:
        """A committed call's result, with what follows its commit done: a capped submission's swap in
        Redis from the loop (``AsyncSwap``), then the next launch's record on the loop (SQLite's when
        ``sqlite_on_loop`` and its write lock is free; PostgreSQL's through ``statements`` where the
        hand-over says it can: ``HandOver.then_on_loop``), anything else on a hot thread."""
        if not isinstance(result, AfterCommit):
            return result
        step = result.handover
        swap = self._async_swap()
        if step is None or swap is None or self.served.runtime.settings.max_concurrent_units:
            # (A deployment-wide cap may send a reconciliation after the hand-over: a Celery call.)
            return await self._hot.run(result.finish)
        taken: Acquired | ServiceError
        try:
            taken = await swap.swap(step.old_holder, step.holder, step.pools)
        except ServiceError as error:
            taken = error
        then = functools.partial(step.then, taken)
        if sqlite_on_loop and isinstance(taken, Acquired) and taken.ok:
            try:
                with without_waiting(self.served.runtime.sessions):
                    return then()  # one transaction: the launch's record
            except WriterBusy:
                pass
        if statements is not None and step.then_on_loop is not None and isinstance(taken, Acquired) and taken.ok:
            return await self._finished(await step.then_on_loop(statements))  # left over: on a thread
        return await self._hot.run(then)

    async def aclose(self) -> None:
        """Close what the event loop made (the hand-over's Redis client, the async database connections)."""
        swap = self._swap[0] if self._swap else None
        self._swap.clear()
        if swap is not None:
            await swap.aclose()
        statements = self._statements[0] if self._statements else None
        self._statements.clear()
        if statements is not None:
            await statements.aclose()

    def _async_statements(self) -> AsyncStatements | None:
        """This process's :class:`AsyncStatements` (PostgreSQL), made on the event loop at its first use."""
        if not self._statements:
            from mephisto_dist.db.async_statements import AsyncStatements  # psycopg's import: not on SQLite

            self._statements.append(AsyncStatements(self.served.runtime.engine, self.hot_threads))
        return self._statements[0]

    def _async_swap(self) -> AsyncSwap | None:
        """This process's :class:`AsyncSwap`, made on the event loop at its first use."""
        if not self._swap:
            self._swap.append(self.served.runtime.async_swap())
        return self._swap[0]

    def _database_only(self) -> bool:
        """Whether the served run is one whose hot path calls nothing but SQLite (``Served.database_only``)."""
        return self._judge(self.served.database_only)

    def _judge(self, verdict: Callable[[RunContext], bool]) -> bool:
        """A verdict on the served run, worked out once per run read. While the resolver's cache of a run
        served by port has lapsed (it reads the run again every ``RESOLVE_CACHE_S``, in the call), the last
        run's verdict stands (none yet: False)."""
        judged, answer = self._judged.get(verdict.__name__, (None, False))
        run = self.served.cached_run()
        if run is not None and judged is not run:
            answer = verdict(run)
            self._judged[verdict.__name__] = (run, answer)
        return answer

    async def call_in_thread(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run work that may be slow whatever the database (the task's own code, file copies); made again
        across a short outage."""
        return await self._outlasting(work, lambda: run_in_threadpool(work, *args, **kwargs))

    async def call_once_in_thread(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run, once, work whose repeat would not be harmless (metadata appends tips, a live update sends
        a message): an outage reaches the worker at once."""
        return await run_in_threadpool(work, *args, **kwargs)

    async def _outlasting(self, work: Callable[..., object], attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, made again while it fails with an outage, until ``outage_wait_s`` has passed."""
        settings = self.served.runtime.settings
        started = time.monotonic()
        failures = 0
        while True:
            try:
                result = await attempt()
            except Exception as error:
                if not is_outage(error):
                    raise
                failures += 1
                waited_s = time.monotonic() - started
                if waited_s >= settings.outage_wait_s:
                    if failures > 1:
                        log.warning("%s: the outage outlasted %.1f s of waiting (%d attempts): answering",
                                    _name(work), waited_s, failures)
                    raise
                if failures == 1:
                    log.warning("%s: %s; waiting up to %g s for it to come back", _name(work),
                                translate(error, settings) or error, settings.outage_wait_s)
                # The last pause ends at the deadline: one more call then, and the outage is answered.
                await anyio.sleep(min(retry_delay_s(failures, random.random()), settings.outage_wait_s - waited_s))
                continue
            if failures:
                log.warning("%s: done after waiting out an outage for %.1f s (%d attempts)", _name(work),
                            time.monotonic() - started, failures + 1)
            return result


def _name(work: Callable[..., object]) -> str:
    return getattr(work, "__qualname__", None) or repr(work)


def context_of(connection: HTTPConnection) -> WebContext:
    context: WebContext = connection.app.state.context
    return context
