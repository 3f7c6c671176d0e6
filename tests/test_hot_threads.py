"""``web.hot_threads``: the hot path's work runs on at most ``size`` threads at once, the rest waiting
in order; each caller gets its own result or exception; a caller that gives up leaves the work to finish."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mephisto_dist.web.hot_threads import HotThreads


def test_at_most_size_calls_run_at_once_and_each_caller_gets_its_own_answer() -> None:
    pool = HotThreads(2)
    running = 0
    most = 0
    order: list[int] = []
    lock = threading.Lock()
    release = threading.Event()

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            order.append(i)
        release.wait(10)
        with lock:
            running -= 1
        if i == 3:
            raise ValueError("three")
        return i * 10

    async def go() -> list[object]:
        calls = [asyncio.ensure_future(pool.run(lambda i=i: work(i))) for i in range(6)]  # type: ignore[misc]
        while True:  # both threads busy, the other four queued
            with lock:
                if running == 2:
                    break
            await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(*calls, return_exceptions=True)

    answers = asyncio.run(go())
    assert answers[:3] == [0, 10, 20] and answers[4:] == [40, 50]
    assert isinstance(answers[3], ValueError) and str(answers[3]) == "three"
    assert most == 2
    assert sorted(order[:2]) == [0, 1] and sorted(order[2:]) == [2, 3, 4, 5]


def test_calls_waiting_for_the_one_thread_run_in_the_order_they_came() -> None:
    pool = HotThreads(1)
    release = threading.Event()
    order: list[int] = []

    def work(i: int) -> None:
        if i == 0:
            release.wait(10)
        order.append(i)

    async def go() -> None:
        calls = [asyncio.ensure_future(pool.run(lambda i=i: work(i))) for i in range(5)]  # type: ignore[misc]
        await asyncio.sleep(0)  # every call queued before the first is released
        release.set()
        await asyncio.gather(*calls)

    asyncio.run(go())
    assert order == [0, 1, 2, 3, 4]


def test_work_whose_caller_gave_up_still_runs_to_its_end() -> None:
    pool = HotThreads(1)
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "done"

    async def go() -> str:
        call = asyncio.ensure_future(pool.run(slow))
        while not started.is_set():
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        return await pool.run(lambda: "next")  # the one thread serves the next call once free

    assert asyncio.run(go()) == "next"
    assert finished.is_set()


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError):
        HotThreads(0)
