"""On SQLite a capped run's claims and submissions run on the web's event loop when the write lock is free,
the submission's hand-over included: its swap through ``redis.asyncio`` (``limiter.redis_pool.AsyncSwap``),
the next launch's record on the loop too. What may wait (the lock held by another writer, Redis failing, a
refusal to withdraw) goes to a hot thread. Driven through ``WebContext.call_split`` as the routes call it,
on a real SQLite file and a real Redis."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from sqlalchemy import select

from mephisto_dist.db.engine import holding_connections, read_transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.limiter import PoolLimit
from mephisto_dist.limiter.redis_pool import AsyncSwap
from mephisto_dist.limiter.units import token_holder
from mephisto_dist.providers import make_provider
from mephisto_dist.runs.launches import LaunchContext, launch_units, run_pool
from mephisto_dist.runs.preparation import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from mephisto_dist.web.context import SQLITE_SPARE_AFTER_S, SQLITE_THREADS, WebContext
from mephisto_dist.work import registration, submissions
from mephisto_dist.work.claims import Registration
from mephisto_dist.work.served import Served
from tests.factories import now
from tests.system import free_port, make_runtime
from tests.taskdirs import write_task_dir

ACTIVE = (UnitStatus.LAUNCHED.value, UnitStatus.ASSIGNED.value)


@pytest.fixture
def capped(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[tuple[Runtime, WebContext, int]]:
    """A run of 6 units at cap 2, its first 2 launched, served as the web serves SQLite."""
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    task_dir = write_task_dir(tmp_path, rows=6, architect="mock", cap=2)
    run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
    assert launch_units(rt.sessions, LaunchContext.of(rt, make_provider("mock")), run_id, now=now()) == 2
    context = WebContext(Served.for_runtime(rt, run_id=run_id), hot_threads=SQLITE_THREADS,
                         spare_after_s=SQLITE_SPARE_AFTER_S, on_loop_when_free=True)
    yield rt, context, run_id
    rt.close()


def units(rt: Runtime, run_id: int) -> dict[int, tuple[str, str | None]]:
    with read_transaction(rt.sessions) as session:
        return {unit_id: (status, launch_id) for unit_id, status, launch_id in session.execute(
            select(Unit.id, Unit.status, Unit.launch_id).where(Unit.task_run_id == run_id))}


def reg(n: int) -> Registration:
    return Registration.from_request({"provider_data": {
        "worker_name": f"w{n}", "assignment_id": f"a{n}", "agent_registration_id": f"a{n}-w{n}"}})


async def claim_and_submit(context: WebContext, n: int) -> None:
    details = await context.call_split(registration.request_agent, context.served, reg(n))
    assert details.agent_id, details.failure_reason
    submitted = await context.call_split(submissions.submit_task, context.served, details.agent_id,
                                         {"rating": str(n)}, split=True)
    assert submitted.first


def jobs_on_threads(context: WebContext) -> int:
    return context._hot._put


def check_the_cap(rt: Runtime, run_id: int, done: int) -> None:
    """As a submission answers: its unit done, the next one launched in its slot, and exactly the active
    units' launches hold the run's tokens."""
    now_units = units(rt, run_id)
    active = {u for u, (status, _) in now_units.items() if status in ACTIVE}
    assert sum(status == UnitStatus.COMPLETED.value for status, _ in now_units.values()) == done
    assert len(active) == min(2, 6 - done)
    assert rt.limiter.holders(run_pool(run_id)) == {token_holder(u, now_units[u][1]) for u in active}
    assert all(launch is None for status, launch in now_units.values() if status == UnitStatus.CREATED.value)


def test_a_capped_runs_calls_and_hand_overs_run_on_the_loop(capped: tuple[Runtime, WebContext, int]) -> None:
    rt, context, run_id = capped

    async def scenario() -> None:
        with holding_connections():
            await claim_and_submit(context, 0)  # the run read and judged
            before = jobs_on_threads(context)
            for n in range(1, 4):  # a unit left to hand the slot to
                await claim_and_submit(context, n)
                check_the_cap(rt, run_id, n + 1)
            assert jobs_on_threads(context) == before, "a call or a hand-over went to a hot thread"
            for n in range(4, 6):  # none: the slot is given back in Redis, a call that may wait: on a thread
                await claim_and_submit(context, n)
                check_the_cap(rt, run_id, n + 1)
            assert jobs_on_threads(context) == before + 2
            await context.aclose()

    asyncio.run(scenario())


def test_a_hand_over_meeting_another_writer_is_recorded_off_the_loop(capped: tuple[Runtime, WebContext, int]) -> None:
    """Another connection holds SQLite's write lock: the call waits for it on a hot thread, the loop
    answering meanwhile, and the slot is handed over once the lock is free."""
    rt, context, run_id = capped
    assert rt.engine.url.database

    async def scenario() -> None:
        with holding_connections():
            await claim_and_submit(context, 0)
            details = await context.call_split(registration.request_agent, context.served, reg(1))
            assert details.agent_id
            other = sqlite3.connect(rt.engine.url.database, isolation_level=None, check_same_thread=False)
            other.execute("BEGIN IMMEDIATE")
            before = jobs_on_threads(context)
            submitting = asyncio.create_task(context.call_split(
                submissions.submit_task, context.served, details.agent_id, {"rating": "1"}, split=True))
            ticks = 0
            for _ in range(20):  # the loop turns while the submission waits
                await asyncio.sleep(0.01)
                ticks += 1
            assert not submitting.done() and ticks == 20
            other.execute("COMMIT")
            other.close()
            assert (await asyncio.wait_for(submitting, 30)).first
            assert jobs_on_threads(context) == before + 1
            check_the_cap(rt, run_id, 2)
            await context.aclose()

    asyncio.run(scenario())


def test_redis_failing_at_the_hand_over_clears_the_intent_and_answers(capped: tuple[Runtime, WebContext, int]) -> None:
    """The swap cannot reach Redis: the worker's answer is recorded and they hear success; the next unit's
    intent is cleared (beat's repair refills the slot), not left for a lease to run out."""
    rt, context, run_id = capped

    async def scenario() -> None:
        with holding_connections():
            await claim_and_submit(context, 0)
            dead = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
            context._swap[:] = [AsyncSwap(dead)]
            details = await context.call_split(registration.request_agent, context.served, reg(1))
            assert details.agent_id
            submitted = await context.call_split(submissions.submit_task, context.served, details.agent_id,
                                                 {"rating": "1"}, split=True)
            assert submitted.first
            await context.aclose()

    asyncio.run(scenario())
    after = units(rt, run_id)
    assert sum(status == UnitStatus.COMPLETED.value for status, _ in after.values()) == 2
    assert all(launch is None for status, launch in after.values() if status == UnitStatus.CREATED.value)
    assert sum(status in ACTIVE for status, _ in after.values()) == 1  # the slot waits for beat's repair


def test_the_async_swap_is_the_limiters_swap(capped: tuple[Runtime, WebContext, int]) -> None:
    """Same script, same answers: a slot moved, a refusal at the cap."""
    rt = capped[0]
    pools = [PoolLimit("test-swap", 1, 60.0)]
    results: list[Any] = []

    async def scenario() -> None:
        swap = rt.async_swap()
        assert swap is not None
        assert rt.limiter.acquire("old", pools).ok
        results.append(await swap.swap("old", "new", pools))
        results.append(await swap.swap("absent", "third", pools))
        await swap.aclose()

    asyncio.run(scenario())
    assert results[0].ok and rt.limiter.holders("test-swap") == {"new"}
    assert not results[1].ok and results[1].refused_pool == "test-swap"
    assert rt.limiter.swap("absent", "third", pools) == results[1]
