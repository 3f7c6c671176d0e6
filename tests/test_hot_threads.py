"""``web.hot_threads``: the hot path's work runs on at most ``size`` threads at once, the rest waiting
in order; each caller gets its own result or exception; a caller that gives up leaves the work to finish."""

from __future__ import annotations

import asyncio
import threading
import time

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


def test_with_spares_calls_that_come_together_share_one_thread() -> None:
    """20 calls at once, each 5 ms: the first thread takes them in turn (none waits 2 s), no spare starts;
    without spares the second thread starts at once and takes some."""
    def threads_used(spare_after_s: float | None) -> set[int]:
        pool = HotThreads(2, spare_after_s=spare_after_s)
        used: set[int] = set()

        def work() -> None:
            used.add(threading.get_ident())
            time.sleep(0.005)  # the call's own work (not a wait for a condition): long enough to overlap

        async def go() -> None:
            await asyncio.gather(*(pool.run(work) for _ in range(20)))

        asyncio.run(go())
        return used

    assert len(threads_used(2.0)) == 1
    assert len(threads_used(None)) == 2


def test_a_spare_takes_the_calls_a_stuck_thread_holds_up_and_ends_once_they_are_taken() -> None:
    pool = HotThreads(2, name="spared", spare_after_s=0.05)
    stuck = threading.Event()
    release = threading.Event()
    names: list[str] = []

    def slow() -> str:
        stuck.set()
        release.wait(10)
        return "slow"

    def quick(i: int) -> int:
        names.append(threading.current_thread().name)
        return i

    def spares() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread.name == "spared-2"]

    async def go() -> tuple[list[object], float]:
        first = asyncio.ensure_future(pool.run(slow))
        while not stuck.is_set():
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        answers: list[object] = list(await asyncio.gather(*(pool.run(lambda i=i: quick(i))  # type: ignore[misc]
                                                            for i in range(3))))
        waited = time.perf_counter() - started
        deadline = time.monotonic() + 5
        while spares() and time.monotonic() < deadline:  # the spare found the queue empty
            await asyncio.sleep(0.01)
        assert not spares()
        release.set()
        answers.append(await first)
        return answers, waited

    answers, waited = asyncio.run(go())
    assert answers == [0, 1, 2, "slow"]
    assert waited < 5  # answered by the spare while the first thread was still held
    assert names == ["spared-2"] * 3


def test_a_call_that_comes_while_a_look_for_a_spare_is_pending_gets_one_too() -> None:
    """One look for a spare is scheduled at a time: the call it was for is taken in time, the next one
    meets a stuck thread, and the next look starts a spare for it."""
    pool = HotThreads(2, name="relook", spare_after_s=0.05)
    release = threading.Event()
    names: list[str] = []

    def short() -> None:
        time.sleep(0.03)  # the call's own work (not a wait for a condition), shorter than spare_after_s

    def stuck() -> str:
        release.wait(10)
        return "stuck"

    def quick() -> str:
        names.append(threading.current_thread().name)
        return "quick"

    async def go() -> tuple[str, bool]:
        first = asyncio.ensure_future(pool.run(short))
        await asyncio.sleep(0.001)
        held = asyncio.ensure_future(pool.run(stuck))  # the look scheduled now finds it taken in time
        await asyncio.sleep(0.04)
        answer = await asyncio.wait_for(pool.run(quick), 5)  # behind the stuck call: a spare's
        still_held = not held.done()
        release.set()
        await first
        assert await held == "stuck"
        return answer, still_held

    answer, still_held = asyncio.run(go())
    assert answer == "quick" and still_held
    assert len(names) == 1  # the spare's, or (a slow machine) the first thread's while a spare took the stuck call
