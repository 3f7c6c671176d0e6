"""The threads the hot path's blocking work runs on (``WebContext.call``): a queue and a few threads
that answer the event loop with one ``call_soon_threadsafe``.

anyio's ``to_thread.run_sync`` did the same job at about three times the event loop's CPU per call (a
capacity limiter, cancel scopes, the async library's detection, a worker thread looked up per call): a
share of a web process's CPU per unit of its own, twice per unit. What it gave that is kept: at most
``size`` calls run at once (the others wait in the queue, in order), and a call the awaiting request
gives up on (a cancelled task) still runs to its end, its answer dropped; idle threads end after
``IDLE_S``, and a thread is started again when work comes. Each thread lives inside ``around()`` (the web's
holds its database connections from one transaction to the next: ``db.engine.holding_connections``).

With ``spare_after_s``, threads past the first are spares: one is started only when a call has waited
that long in the queue (the threads busy with something slow: a task's hook, a database lock held by
another process), and it ends as soon as it finds the queue empty. On SQLite, whose writes are one at a
time anyway, a second thread always at work only made the threads pass the interpreter's lock back and
forth: a capped run's calls cost 1.61-1.80 ms of CPU a unit on two threads always at work, 1.27-1.33 with
the second a spare (``benchmarks/hot_threads.py --cap 50``; in the web process, beside its event loop's
HTTP work, the difference was within the machine's spread: issue 23).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

T = TypeVar("T")

IDLE_S = 10.0


class HotThreads:
    def __init__(self, size: int, name: str = "hot-path",
                 around: Callable[[], AbstractContextManager[object]] = nullcontext,
                 spare_after_s: float | None = None) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = size
        self._name = name
        self._around = around
        self._spare_after_s = spare_after_s
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]]] = \
            queue.SimpleQueue()
        # Under the lock: threads started and not ended, those waiting for a job, jobs not yet taken.
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._pending = 0
        # Jobs put since the start; those taken are _put - _pending. The queue is first in, first out, so
        # the n-th job put is still waiting while fewer than n were taken.
        self._put = 0
        # The loop a look for a spare is scheduled on (one at a time, not one per call), or None.
        self._spare_check: asyncio.AbstractEventLoop | None = None

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on one of the threads; its result, or what it raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((work, loop, future))
        with self._lock:
            self._pending += 1
            self._put += 1
            if self._pending > self._idle and self._threads < self.size:
                if self._threads == 0 or self._spare_after_s is None:
                    self._start(spare=False)
                elif self._spare_check is not loop:
                    self._look_for_spare_later(loop)
        return await future

    def _look_for_spare_later(self, loop: asyncio.AbstractEventLoop) -> None:
        """Under the lock: in ``spare_after_s``, a spare if the newest call put by now is still waiting."""
        assert self._spare_after_s is not None
        self._spare_check = loop
        loop.call_later(self._spare_after_s, self._spare_if_waiting, loop, self._put)

    def _start(self, *, spare: bool) -> None:
        """Under the lock."""
        self._threads += 1
        threading.Thread(target=self._serve, args=(spare,), name=f"{self._name}-{self._threads}",
                         daemon=True).start()

    def _spare_if_waiting(self, loop: asyncio.AbstractEventLoop, number: int) -> None:
        with self._lock:
            self._spare_check = None
            if self._threads >= self.size or self._pending <= self._idle:
                return
            if self._put - self._pending < number:
                self._start(spare=True)
            else:  # taken in time: look again for the calls that came after it
                self._look_for_spare_later(loop)

    def _serve(self, spare: bool) -> None:
        with self._around():
            self._serve_jobs(spare)

    def _serve_jobs(self, spare: bool) -> None:
        jobs = self._jobs
        lock = self._lock
        while True:
            with lock:
                self._idle += 1
            try:
                # A spare waits for nothing: it ends once the calls that waited are taken.
                work, loop, future = jobs.get_nowait() if spare else jobs.get(timeout=IDLE_S)
            except queue.Empty:
                with lock:
                    self._idle -= 1
                    if not self._pending:  # a job put from now on sees this thread gone and starts one
                        self._threads -= 1
                        return
                continue
            with lock:
                self._idle -= 1
                self._pending -= 1
            try:
                result = work()
            except BaseException as error:  # noqa: BLE001 - handed to the awaiting request
                _answer(loop, future, None, error)
            else:
                _answer(loop, future, result, None)
            del work, loop, future


def _answer(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
            error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one waits for the answer
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return  # the request gave up (cancelled): the answer is dropped
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
