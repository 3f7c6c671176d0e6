"""The threads the hot path's blocking work runs on (``WebContext.call``): a queue and a few threads
that answer the event loop with one ``call_soon_threadsafe``.

anyio's ``to_thread.run_sync`` did the same job at about three times the event loop's CPU per call (a
capacity limiter, cancel scopes, the async library's detection, a worker thread looked up per call): a
share of a web process's CPU per unit of its own, twice per unit. What it gave that is kept: at most
``size`` calls run at once (the others wait in the queue, in order), and a call the awaiting request
gives up on (a cancelled task) still runs to its end, its answer dropped; idle threads end after
``IDLE_S``, and a thread is started again when work comes. Each thread lives inside ``around()`` (the web's
holds its database connections from one transaction to the next: ``db.engine.holding_connections``).
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
                 around: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = size
        self._name = name
        self._around = around
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]]] = \
            queue.SimpleQueue()
        # Under the lock: threads started and not ended, those waiting for a job, jobs not yet taken.
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._pending = 0

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on one of the threads; its result, or what it raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((work, loop, future))
        with self._lock:
            self._pending += 1
            if self._pending > self._idle and self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"{self._name}-{self._threads}", daemon=True).start()
        return await future

    def _serve(self) -> None:
        with self._around():
            self._serve_jobs()

    def _serve_jobs(self) -> None:
        jobs = self._jobs
        lock = self._lock
        while True:
            with lock:
                self._idle += 1
            try:
                work, loop, future = jobs.get(timeout=IDLE_S)
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
