"""PostgreSQL's one-statement claim and submission (``db.transitions.claim_alone`` and
``complete_submission_alone``), each in autocommit with no BEGIN or COMMIT around it: what they write is
what the transaction path writes, they write nothing at all where that path must answer (then it does), and
processes racing through them never share a unit."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, update

from mephisto_dist.db.engine import make_engine, make_sessionmaker, single_statement, transaction
from mephisto_dist.db.models import Agent, TaskRun, Unit, Worker
from mephisto_dist.db.transitions import NextLaunch, complete_submission_alone, move_unit
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.errors import RequestError
from mephisto_dist.runs.launches import LaunchContext, launch_units
from mephisto_dist.runs.preparation import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from mephisto_dist.work import claims, registration, submissions
from mephisto_dist.work.claims import Registration, RunContext
from mephisto_dist.work.served import Served
from tests.factories import make_run, now
from tests.system import make_runtime
from tests.taskdirs import write_task_dir
from tests.test_agents import at_once, register, submit


@pytest.fixture
def database_url(pg_url: str) -> str:
    """PostgreSQL only: the statements are PostgreSQL's (``engine`` is conftest's, on this URL)."""
    return pg_url


@pytest.fixture
def pg_engine(engine: Engine) -> Engine:
    return engine


def reg_of(worker: str, assignment_ref: str) -> Registration:
    return Registration.from_request({"provider_data": {
        "worker_name": worker, "assignment_id": assignment_ref,
        "agent_registration_id": f"{assignment_ref}-{worker}", "provider_type": "mock"}})


def claim_alone(factory: Any, run: RunContext, worker: str, assignment_ref: str) -> claims.AgentDetails | None:
    with single_statement(factory) as connection:
        return claims.claim_alone(connection, run, reg_of(worker, assignment_ref), now=now())


def submit_alone(factory: Any, run: RunContext, agent_id: str, outputs: dict[str, Any],
                 bind: NextLaunch | None = None) -> Any:
    with single_statement(factory) as connection:
        return complete_submission_alone(connection, agent_id, run.run_id, outputs=outputs, now=now(), bind=bind)


class Statements:
    """The statements an engine's connections send, by their first word (BEGIN and COMMIT are sent by
    psycopg itself; ``in_transaction`` tells whether SQLAlchemy began one)."""

    def __init__(self, engine: Engine) -> None:
        self.sent: list[str] = []
        self.begun = 0
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)

    def _statement(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.sent.append(statement.split()[0].upper())

    def _begin(self, conn: Any) -> None:
        self.begun += 1


def counts(factory: Any, run_id: int) -> tuple[int, int]:
    """(workers, agents of the run)."""
    with transaction(factory) as session:
        return (int(session.scalar(select(func.count()).select_from(Worker)) or 0),
                int(session.scalar(select(func.count()).select_from(Agent).where(Agent.task_run_id == run_id)) or 0))


def test_a_claim_is_one_statement_and_writes_what_the_transaction_writes(pg_engine: Engine) -> None:
    factory = make_sessionmaker(pg_engine)
    run = make_run(factory, assignments=4)
    first = register(factory, run, "alice", "a0")  # the transaction path
    assert first.agent_id and first.unit_id is not None

    heard = Statements(pg_engine)
    alone = claim_alone(factory, run, "alice", "a1")
    assert heard.sent == ["WITH"]
    assert alone is not None and alone.agent_id and alone.created and alone.worker_id == first.worker_id
    assert alone.unit_id == first.unit_id + 1  # the lowest launched unit left
    assert alone.init_task_data == {"text": "item 1", "html": "task.html"}
    with transaction(factory) as session:
        made = session.get(Agent, alone.agent_id)
        by_path = session.get(Agent, first.agent_id)
        unit = session.get(Unit, alone.unit_id)
        assert made is not None and by_path is not None and unit is not None
        for column in ("task_run_id", "worker_id", "status", "init_data", "outputs", "task_metadata"):
            assert getattr(made, column) == getattr(by_path, column), column
        assert made.registration_id == "a1-alice" and made.unit_id == unit.id
        assert made.provider_data == reg_of("alice", "a1").provider_data
        assert made.status == AgentStatus.IN_TASK.value and made.created_at == made.status_changed_at
        assert (unit.status, unit.agent_id, unit.worker_id) == (UnitStatus.ASSIGNED.value, made.id, made.worker_id)
        assert unit.assigned_at == unit.status_changed_at == made.created_at
    # Reconnecting under the same registration is the transaction path's: it answers the same agent.
    assert claim_alone(factory, run, "alice", "a1") is None
    assert register(factory, run, "alice", "a1").agent_id == alone.agent_id

    # A new worker's row is made by the same statement, as the transaction path makes it.
    heard.sent.clear()
    carol = claim_alone(factory, run, "carol", "a2")
    assert heard.sent == ["WITH"] and carol is not None and carol.unit_id == alone.unit_id + 1
    with transaction(factory) as session:
        made = session.execute(select(Worker).where(Worker.worker_name == "carol")).scalar_one()
        assert (made.id, made.provider_type, made.is_blocked) == (carol.worker_id, "mock", False)
        assert made.created_at is not None


def test_a_new_worker_refused_leaves_no_row(pg_engine: Engine) -> None:
    """As on the transaction path, a worker's row is made only once there is a unit to give them."""
    factory = make_sessionmaker(pg_engine)
    run = make_run(factory, assignments=1)
    assert register(factory, run, "alice", "a0").agent_id
    before = counts(factory, run.run_id)
    assert claim_alone(factory, run, "dave", "a1") is None
    assert counts(factory, run.run_id) == before
    assert register(factory, run, "dave", "a1").failure_reason == claims.NO_UNIT_AVAILABLE
    assert counts(factory, run.run_id) == before


def test_it_writes_nothing_where_the_transaction_path_must_answer(pg_engine: Engine) -> None:
    factory = make_sessionmaker(pg_engine)
    run = make_run(factory, assignments=2, units_per_assignment=2)
    for worker in ("alice", "bob"):
        assert register(factory, run, worker, "a0").agent_id
    with transaction(factory) as session:
        session.execute(update(Worker).where(Worker.worker_name == "bob").values(is_blocked=True))
    before = counts(factory, run.run_id)
    assert claim_alone(factory, run, "bob", "a1") is None  # blocked: the gate's refusal is the path's
    assert register(factory, run, "bob", "a1").failure_reason
    # Alice worked on the first assignment: only the second's units are hers.
    second = claim_alone(factory, run, "alice", "a1")
    assert second is not None and second.unit_id is not None
    assert claim_alone(factory, run, "alice", "a2") is None  # none left in an assignment new to her
    assert register(factory, run, "alice", "a2").failure_reason == claims.NO_UNIT_AVAILABLE
    assert counts(factory, run.run_id) == (before[0], before[1] + 1)


def test_it_skips_the_units_other_claims_hold_and_never_waits_for_them(pg_engine: Engine) -> None:
    factory = make_sessionmaker(pg_engine)
    run = make_run(factory, assignments=3)
    assert register(factory, run, "alice", "a0").agent_id
    holder = factory()
    try:
        lowest = holder.execute(select(Unit.id).where(Unit.task_run_id == run.run_id, Unit.status == "launched")
                                .order_by(Unit.id).limit(1).with_for_update()).scalar_one()
        skipped = claim_alone(factory, run, "alice", "a1")
        assert skipped is not None and skipped.unit_id == lowest + 1
        holder.execute(select(Unit.id).where(Unit.task_run_id == run.run_id).with_for_update()).all()
        assert claim_alone(factory, run, "alice", "a2") is None  # every free unit held: at once, not blocked
    finally:
        holder.rollback()
        holder.close()
    assert counts(factory, run.run_id)[1] == 2


def test_a_submission_alone_completes_agent_and_unit_and_says_what_is_left(pg_engine: Engine) -> None:
    factory = make_sessionmaker(pg_engine)
    run = make_run(factory, assignments=2)
    agents = [register(factory, run, "alice", f"a{i}") for i in range(2)]
    heard = Statements(pg_engine)
    done = submit_alone(factory, run, str(agents[0].agent_id), {"rating": "4"})
    assert heard.sent == ["WITH"]
    assert done is not None and done.unit_id == agents[0].unit_id and done.worker_id == agents[0].worker_id
    assert done.unit.run_has_more and not done.unit.is_completed and done.bound_unit_id is None
    with transaction(factory) as session:
        agent = session.get(Agent, agents[0].agent_id)
        unit = session.get(Unit, done.unit_id)
        assert agent is not None and unit is not None
        assert (agent.status, agent.outputs) == (AgentStatus.COMPLETED.value, {"rating": "4"})
        assert agent.submitted_at == agent.status_changed_at and agent.submitted_at is not None
        assert unit.status == UnitStatus.COMPLETED.value and unit.completed_at == agent.submitted_at
    assert submit_alone(factory, run, str(agents[0].agent_id), {"rating": "1"}) is None  # a repeat
    assert not submit(factory, run, str(agents[0].agent_id), {"rating": "1"}).first
    last = submit_alone(factory, run, str(agents[1].agent_id), {"rating": "5"})
    assert last is not None and not last.unit.run_has_more
    with transaction(factory) as session:
        kept = session.get(Agent, agents[0].agent_id)
        assert kept is not None and kept.outputs == {"rating": "4"}


def test_a_submission_alone_for_a_unit_that_moved_on_writes_nothing(pg_engine: Engine) -> None:
    """No rollback can undo the agent's half in autocommit: the statement writes neither row, and the
    transaction path refuses the submission as before."""
    factory = make_sessionmaker(pg_engine)
    run = make_run(factory, assignments=1)
    details = register(factory, run, "alice", "a0")
    assert details.agent_id and details.unit_id is not None
    with transaction(factory) as session:
        assert move_unit(session, details.unit_id, UnitStatus.ASSIGNED, UnitStatus.EXPIRED, now=now())
    assert submit_alone(factory, run, details.agent_id, {"rating": "4"}) is None
    with transaction(factory) as session:
        agent = session.get(Agent, details.agent_id)
        assert agent is not None and agent.status == AgentStatus.IN_TASK.value and agent.outputs is None
    with pytest.raises(RequestError, match="no longer open for submissions"):
        submit(factory, run, details.agent_id, {"rating": "4"})
    for forged in ("forged-agent", ""):
        assert submit_alone(factory, run, forged, {}) is None


def launch_ids(factory: Any, run_id: int) -> dict[int, str | None]:
    with transaction(factory) as session:
        return dict(session.execute(select(Unit.id, Unit.launch_id).where(
            Unit.task_run_id == run_id, Unit.status == UnitStatus.CREATED.value)).all())


def one_claimed(factory: Any, run: RunContext, worker: str) -> str:
    """Launch the run's lowest created unit and give it to ``worker``: the agent's id."""
    with transaction(factory) as session:
        unit_id = session.scalar(select(func.min(Unit.id)).where(
            Unit.task_run_id == run.run_id, Unit.status == UnitStatus.CREATED.value, Unit.launch_id.is_(None)))
        assert unit_id is not None
        assert move_unit(session, unit_id, UnitStatus.CREATED, UnitStatus.LAUNCHED, now=now())
    details = register(factory, run, worker, f"r{worker}")
    assert details.agent_id
    return details.agent_id


def test_the_next_launch_is_bound_where_a_cap_counts_the_runs_units(pg_engine: Engine) -> None:
    factory = make_sessionmaker(pg_engine)
    retry_at = now() + timedelta(minutes=5)
    capped = make_run(factory, assignments=3, launch=False, max_concurrent_units=1, task_name="capped")
    done = submit_alone(factory, capped, one_claimed(factory, capped, "w1"), {}, NextLaunch("L1", retry_at, False))
    assert done is not None and done.bound_unit_id is not None and done.unit.run_has_more
    waiting = launch_ids(factory, capped.run_id)
    assert waiting[done.bound_unit_id] == "L1" and list(waiting.values()).count(None) == 1
    assert done.bound_unit_id == min(waiting)  # the lowest created unit

    uncapped = make_run(factory, assignments=3, launch=False, task_name="uncapped")
    done = submit_alone(factory, uncapped, one_claimed(factory, uncapped, "w2"), {}, NextLaunch("L2", retry_at, False))
    assert done is not None and done.bound_unit_id is None
    assert set(launch_ids(factory, uncapped.run_id).values()) == {None}
    # The deployment's cap counts every run's units.
    done = submit_alone(factory, uncapped, one_claimed(factory, uncapped, "w3"), {}, NextLaunch("L3", retry_at, True))
    assert done is not None and done.bound_unit_id is not None
    assert launch_ids(factory, uncapped.run_id)[done.bound_unit_id] == "L3"

    stopping = make_run(factory, assignments=3, launch=False, max_concurrent_units=1, task_name="stopping")
    agent_id = one_claimed(factory, stopping, "w4")
    with transaction(factory) as session:
        session.execute(update(TaskRun).where(TaskRun.id == stopping.run_id).values(shutdown_requested_at=now()))
    done = submit_alone(factory, stopping, agent_id, {}, NextLaunch("L4", retry_at, True))
    assert done is not None and done.bound_unit_id is None  # recorded, and nothing more launched
    assert set(launch_ids(factory, stopping.run_id).values()) == {None}


def served_run(tmp_path: Path, pg_url: str, redis_url: str, *, cap: int) -> tuple[Runtime, Served]:
    rt = make_runtime(tmp_path / "data", pg_url, redis_url)
    task_dir = write_task_dir(tmp_path, rows=6, architect="mock", cap=cap)
    run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
    from mephisto_dist.providers import make_provider

    launch_units(rt.sessions, LaunchContext.of(rt, make_provider("mock")), run_id, now=now())
    return rt, Served.for_runtime(rt, run_id=run_id)


@pytest.mark.parametrize("cap", [0, 2])
def test_the_web_service_claims_and_submits_in_one_statement_each(tmp_path: Path, pg_url: str, redis_url: str,
                                                                  cap: int) -> None:
    """``request_agent`` and ``submit_task`` as the web process calls them: a claim (a new worker's too)
    and a submission are one statement each; a capped run adds the handed-over launch's record; the run's last
    submission closes it."""
    rt, served = served_run(tmp_path, pg_url, redis_url, cap=cap)
    try:
        run = served.run()
        heard = Statements(rt.engine)
        for n in range(6):
            heard.sent.clear()
            details = registration.request_agent(served, reg_of("alice" if n % 2 else f"new{n}", f"a{n}"))
            assert details.agent_id and heard.sent == ["WITH"], (n, heard.sent)
            heard.sent.clear()
            submitted = submissions.submit_task(served, details.agent_id, {"rating": str(n)})
            assert submitted.first
            if not cap:
                expected = ["WITH"] + (["SELECT", "UPDATE"] if n == 5 else [])  # the last closes the run
            elif n < 6 - cap:
                expected = ["WITH", "UPDATE"]  # the next unit's launch, handed the slot, recorded
            else:  # nothing left to hand over: the refill looks (the run, then its launchable units)
                expected = ["WITH", "SELECT", "SELECT"] if n < 5 else ["WITH", "SELECT", "UPDATE", "SELECT"]
            assert heard.sent == expected, (n, heard.sent)
        with transaction(rt.sessions) as session:
            assert session.scalar(select(TaskRun.is_completed).where(TaskRun.id == run.run_id))
            statuses = Counter(session.scalars(select(Unit.status).where(Unit.task_run_id == run.run_id)))
        assert statuses == {UnitStatus.COMPLETED.value: 6}
    finally:
        rt.close()


def _claim_like_the_web(url: str, run: RunContext, worker: str, prefix: str, start: Any, results: Any) -> None:
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    start.wait()
    got = []
    for i in range(8):
        ref = f"{prefix}hit{i}"
        details = claim_alone(factory, run, worker, ref) or register(factory, run, worker, ref)
        got.append(details.unit_id)
    results.put((worker, got))
    engine.dispose()


@pytest.mark.system
@pytest.mark.parametrize("names", ["one each", "shared"])
def test_processes_claiming_in_one_statement_never_share_a_unit(pg_engine: Engine, pg_url: str, names: str) -> None:
    """Six processes claiming as ``request_agent`` does (the one statement first, the transaction when it
    wrote nothing), 48 asks for 20 units in 10 assignments, every worker new when they start (``shared``:
    two processes per worker, each with its own registrations, racing to make the worker's row): every
    unit goes to one agent, no worker gets two units of one assignment, one row per worker given one."""
    factory = make_sessionmaker(pg_engine)
    run = make_run(factory, assignments=10, units_per_assignment=2)
    workers = [f"w{n}" for n in range(6)] if names == "one each" else [f"w{n // 2}" for n in range(6)]
    outcomes = at_once(_claim_like_the_web, [(pg_url, run, worker, f"p{n}-") for n, worker in enumerate(workers)])
    handed = [unit for _, units in outcomes for unit in units if unit is not None]
    assert len(handed) == 20 and len(set(handed)) == 20
    with transaction(factory) as session:
        pairs = session.execute(select(Agent.worker_id, Agent.assignment_id)
                                .where(Agent.task_run_id == run.run_id)).all()
        owners = Counter(session.scalars(select(Unit.agent_id).where(Unit.task_run_id == run.run_id)))
        assigned = session.scalar(select(func.count()).select_from(Unit).where(
            Unit.task_run_id == run.run_id, Unit.status == UnitStatus.ASSIGNED.value))
        rows = Counter(session.scalars(select(Worker.worker_name)))
    assert assigned == 20 and len(pairs) == len(set(pairs)) == 20
    assert all(count == 1 for count in owners.values())
    # One row per worker who got a unit (one who got none has none: a refusal writes nothing).
    given = {worker for worker, units in outcomes if any(unit is not None for unit in units)}
    assert rows == Counter(given)
