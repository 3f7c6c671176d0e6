"""PostgreSQL's one-statement claim and submission on the web's event loop (``db.async_statements``,
``WebContext.call_first``): the same rows as on a thread, every call answered as before (what the statement
does not write goes to the transaction path on a hot thread), a bounded set of connections, and a lost or
interrupted connection never used again. On a real PostgreSQL and a real Redis."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import IntegrityError

from mephisto_dist.db.async_statements import AsyncStatements
from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Agent, TaskRun, Unit, Worker
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.errors import RequestError, Unreachable
from mephisto_dist.errors.drivers import is_outage
from mephisto_dist.limiter.redis_pool import RedisLimiter
from mephisto_dist.providers import UnitLaunch, make_provider
from mephisto_dist.runs.launches import LaunchContext, send_launch_on_loop
from mephisto_dist.web.context import WebContext
from mephisto_dist.web.routes.agents import agent_details
from mephisto_dist.web.routes.submissions import submitted
from mephisto_dist.work import claims
from mephisto_dist.work.claims import NO_UNIT_AVAILABLE
from tests.factories import make_run, now
from tests.test_agents import register
from tests.test_one_statement import Statements, reg_of, served_run

_PID = text("SELECT pg_backend_pid() AS pid")
_SLEEP = text("SELECT pg_backend_pid() AS pid, pg_sleep(:seconds)")


@pytest.fixture
def database_url(pg_url: str) -> str:
    """PostgreSQL only (``engine`` is conftest's, on this URL)."""
    return pg_url


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Yield to the loop until ``condition`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


def sleeping(engine: Engine) -> bool:
    """Whether a ``pg_sleep`` statement of another connection is running on the server."""
    with engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep%' "
            "AND pid <> pg_backend_pid()")).scalar())


async def pid_of(statements: AsyncStatements) -> int:
    return int((await statements.run(_PID, {})).scalar())


def test_a_claim_on_the_loop_writes_what_a_thread_writes(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=3)
    by_thread = register(factory, run, "alice", "a0")
    assert by_thread.agent_id and by_thread.unit_id is not None

    async def claim(worker: str, ref: str) -> claims.AgentDetails | None:
        statements = AsyncStatements(engine, 2)
        try:
            return await claims.claim_alone_on_loop(statements, run, reg_of(worker, ref), now=now())
        finally:
            await statements.aclose()

    on_loop = asyncio.run(claim("alice", "a1"))
    assert on_loop is not None and on_loop.agent_id and on_loop.created
    assert (on_loop.worker_id, on_loop.unit_id) == (by_thread.worker_id, by_thread.unit_id + 1)
    assert by_thread.init_task_data == {"text": "item 0", "html": "task.html"}
    assert on_loop.init_task_data == {"text": "item 1", "html": "task.html"}  # its assignment's data
    with transaction(factory) as session:
        made, other = session.get(Agent, on_loop.agent_id), session.get(Agent, by_thread.agent_id)
        unit = session.get(Unit, on_loop.unit_id)
        assert made is not None and other is not None and unit is not None
        for column in ("task_run_id", "worker_id", "status", "init_data", "outputs", "task_metadata"):
            assert getattr(made, column) == getattr(other, column), column
        assert made.provider_data == reg_of("alice", "a1").provider_data  # JSON, through the dialect's adapters
        assert made.created_at == made.status_changed_at and made.created_at.tzinfo is not None
        assert (unit.status, unit.agent_id, unit.assigned_at) == (UnitStatus.ASSIGNED.value, made.id, made.created_at)
    # Where the transaction path must answer (a registration seen before), nothing is written.
    assert asyncio.run(claim("alice", "a1")) is None
    carol = asyncio.run(claim("carol", "a2"))  # a new worker's row, made by the statement
    assert carol is not None
    with transaction(factory) as session:
        assert session.execute(select(Worker.id).where(Worker.worker_name == "carol")).scalar_one() == carol.worker_id


@pytest.mark.parametrize("cap", [0, 2])
def test_the_web_claims_and_submits_on_the_loop_and_answers_the_rest_on_a_thread(
        tmp_path: Path, pg_url: str, redis_url: str, cap: int) -> None:
    """Through the routes' own functions, as the web calls them: every claim and submission of a run of
    six is its statement on the loop (no thread sent one), and so is a capped run's handed-over launch's
    record; the hot threads take only what follows a commit and may wait (the refill's look, closing the
    run), and what the statement does not write (a repeat, a stranger, no unit left)."""
    rt, served = served_run(tmp_path, pg_url, redis_url, cap=cap)
    context = WebContext(served, hot_threads=4, statements_on_loop=True)
    served.run()  # read once, as by the process's first request (which is judged on a thread)
    heard = Statements(rt.engine)
    answers: list[Any] = []

    async def work() -> None:
        try:
            agents = []
            for n in range(6):
                details = (await agent_details(context, {"provider_data": reg_of(f"w{n % 4}", f"a{n}").provider_data}))["data"]
                assert details["agent_id"], details
                agents.append(details["agent_id"])
                answer = await submitted(context, {"USED_AGENT_ID": details["agent_id"], "final_data": {"n": n}})
                assert answer["status"] == "Submitted!", answer
            assert "WITH" not in heard.sent, heard.sent  # no claim or submission statement from a thread
            on_threads = context._hot._put
            answers.append(on_threads)
            # What the statement leaves to the transaction path, answered there as before:
            answers.append(await submitted(context, {"USED_AGENT_ID": agents[0], "final_data": {"n": "again"}}))
            answers.append((await agent_details(context, {"provider_data": reg_of("w9", "late").provider_data}))["data"])
            with pytest.raises(RequestError):
                await submitted(context, {"USED_AGENT_ID": "forged-agent-id", "final_data": {}})
            answers.append(context._hot._put - on_threads)
        finally:
            await context.aclose()

    try:
        asyncio.run(work())
        on_threads, repeat, late, fallbacks = answers
        # Uncapped: only the run's close. Capped 2 of 6: the refill's look after the fifth, the close after
        # the sixth (the four handed-over launches are recorded on the loop).
        assert on_threads == (1 if not cap else 2)
        assert repeat["status"] == "Already submitted"
        assert late["agent_id"] is None and late["failure_reason"] == NO_UNIT_AVAILABLE
        assert fallbacks == 3
        with transaction(rt.sessions) as session:
            run_id = served.run().run_id
            assert session.scalar(select(TaskRun.is_completed).where(TaskRun.id == run_id))
            units = session.execute(select(Unit.status, Agent.outputs).join(Agent, Agent.id == Unit.agent_id)
                                    .where(Unit.task_run_id == run_id)).all()
        assert Counter(status for status, _ in units) == {UnitStatus.COMPLETED.value: 6}
        assert sorted(outputs["n"] for _, outputs in units) == list(range(6))  # the first answer kept
    finally:
        rt.close()


def test_no_more_connections_than_its_size_and_every_caller_served(engine: Engine) -> None:
    async def work() -> tuple[set[int], int]:
        statements = AsyncStatements(engine, 2)
        try:
            ran = await asyncio.gather(*(statements.run(_SLEEP, {"seconds": 0.05}) for _ in range(12)))
            return {int(r.scalar()) for r in ran}, statements._open
        finally:
            await statements.aclose()

    pids, still_open = asyncio.run(work())
    assert len(pids) == 2 and still_open == 2


def test_a_lost_connection_is_an_outage_and_never_used_again(engine: Engine) -> None:
    async def work() -> None:
        statements = AsyncStatements(engine, 1)
        try:
            first = await pid_of(statements)
            with engine.connect() as admin:
                assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
            with pytest.raises(Unreachable, match="cannot reach the database") as lost:
                await pid_of(statements)
            assert is_outage(lost.value) and statements._open == 0
            assert await pid_of(statements) != first  # a new connection
        finally:
            await statements.aclose()

    asyncio.run(work())


def test_an_interrupted_statement_closes_its_connection_and_a_waiter_gets_another(engine: Engine) -> None:
    """A statement cancelled mid-flight leaves its connection in an unknown state: it is closed. A caller
    waiting for a connection then makes one; a waiter cancelled takes none away."""

    async def work() -> None:
        statements = AsyncStatements(engine, 1)
        try:
            slow = asyncio.create_task(statements.run(_SLEEP, {"seconds": 5}))
            await until(lambda: sleeping(engine))  # the slow statement is running on the server
            waiting = asyncio.create_task(pid_of(statements))
            given_up = asyncio.create_task(pid_of(statements))
            await until(lambda: len(statements._waiting) == 2)
            given_up.cancel()
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            pid = await asyncio.wait_for(waiting, 5)
            with pytest.raises(asyncio.CancelledError):
                await given_up
            assert statements._open == 1 and await pid_of(statements) == pid
        finally:
            await statements.aclose()

    asyncio.run(work())


def test_a_statement_refused_by_a_constraint_keeps_its_connection(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    make_run(factory, assignments=1)
    insert = text("INSERT INTO worker (id, provider_type, worker_name, is_blocked, created_at) "
                  "SELECT id, provider_type, worker_name, is_blocked, created_at FROM worker LIMIT 1")
    with transaction(factory) as session:
        session.execute(update(Worker).values(is_blocked=False))
        session.add(Worker(provider_type="mock", worker_name="someone", is_blocked=False, created_at=now()))

    async def work() -> None:
        statements = AsyncStatements(engine, 1)
        try:
            pid = await pid_of(statements)
            with pytest.raises(IntegrityError) as refused:
                await statements.run(insert, {})
            assert isinstance(refused.value.orig, psycopg.errors.UniqueViolation)
            assert await pid_of(statements) == pid
        finally:
            await statements.aclose()

    asyncio.run(work())


def test_it_is_for_postgresql_through_psycopg_only(tmp_path: Path) -> None:
    from mephisto_dist.db.engine import make_engine

    sqlite = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(ValueError, match="PostgreSQL through psycopg"):
        AsyncStatements(sqlite, 1)
    sqlite.dispose()


def test_a_handed_over_launch_is_recorded_on_the_loop_and_an_orphan_left_to_a_thread(engine: Engine,
                                                                                       redis_url: str) -> None:
    """``runs.launches.send_launch_on_loop``: the launch published and its record sent from the loop; a
    launch no longer owning its unit (withdrawn meanwhile) is left to a thread, which records it as
    ``send_launches`` does (the unit untouched), without publishing it again."""
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=2, launch=False)
    published: list[str] = []
    provider = make_provider("mock")

    def publish(launch: UnitLaunch, server_url: str, task_args: Any) -> str:
        published.append(launch.launch_id)
        return f"p-{launch.launch_id}"

    provider.publish_unit = publish  # type: ignore[method-assign]
    ctx = LaunchContext(RedisLimiter(redis.Redis.from_url(redis_url)), provider, 60.0, 0)
    with transaction(factory) as session:
        first, second = session.scalars(select(Unit.id).where(Unit.task_run_id == run.run_id).order_by(Unit.id))
        session.execute(update(Unit).where(Unit.id == first).values(launch_id="L1"))

    async def send(unit_id: int, launch_id: str) -> Any:
        statements = AsyncStatements(engine, 1)
        try:
            return await send_launch_on_loop(statements, factory, ctx, "http://x", {},
                                             UnitLaunch(run.run_id, unit_id, launch_id), now=now())
        finally:
            await statements.aclose()

    assert asyncio.run(send(first, "L1")) is None
    with transaction(factory) as session:
        unit = session.get(Unit, first)
        assert unit is not None and (unit.status, unit.provider_unit_id) == (UnitStatus.LAUNCHED.value, "p-L1")
    left = asyncio.run(send(second, "L2"))  # never bound to L2: not its launch's to record
    assert left is not None and published == ["L1", "L2"]
    assert left() == 0 and published == ["L1", "L2"]
    with transaction(factory) as session:
        unit = session.get(Unit, second)
        assert unit is not None and (unit.status, unit.launch_id) == (UnitStatus.CREATED.value, None)


def test_a_server_that_never_answers_is_an_outage_within_the_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that accepts and says nothing (a hung host): making the connection gives up after
    ``CONNECT_TIMEOUT_S`` with the web's one line for an unreachable database, never a request held on."""
    from mephisto_dist.db import async_statements
    from mephisto_dist.db.engine import make_engine

    monkeypatch.setattr(async_statements, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        engine = make_engine(f"postgresql://someone:secret@127.0.0.1:{port}/nothing")

        async def work() -> None:
            statements = AsyncStatements(engine, 1)
            try:
                started = time.monotonic()
                with pytest.raises(Unreachable) as lost:
                    await asyncio.wait_for(pid_of(statements), 30)
                assert time.monotonic() - started < 10
                assert is_outage(lost.value) and "secret" not in str(lost.value)
                assert f"127.0.0.1:{port}" in str(lost.value) and statements._open == 0
            finally:
                await statements.aclose()

        try:
            asyncio.run(work())
        finally:
            engine.dispose()
