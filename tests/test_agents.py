"""The hot path (request_agent / submit_task logic) on real SQLite and PostgreSQL, including races
between processes."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from mephisto_dist.db.engine import make_engine, make_sessionmaker, transaction
from mephisto_dist.db.migrate import upgrade
from mephisto_dist.db.models import Agent, TaskRun, Unit
from mephisto_dist.db.transitions import move_unit
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.errors import IllegalTransition, RequestError
from mephisto_dist.work import claims, screening
from mephisto_dist.work.claims import Registration, RunContext
from tests.factories import make_run, now


def register(factory, run: RunContext, worker: str, assignment_ref: str = "a1") -> claims.AgentDetails:  # type: ignore[no-untyped-def]
    reg = Registration.from_request({"provider_data": {
        "worker_name": worker, "assignment_id": assignment_ref,
        "agent_registration_id": f"{assignment_ref}-{worker}", "provider_type": "mock"}})
    with transaction(factory) as session:
        return claims.register_agent(session, run, reg, now=now())


def submit(factory, run: RunContext, agent_id: str, outputs: dict) -> claims.Submission:  # type: ignore[no-untyped-def,type-arg]
    with transaction(factory) as session:
        return claims.submit_task(session, run, agent_id, outputs, now=now())


def test_worker_gets_a_unit_and_reconnects_to_the_same_agent(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=2)
    first = register(factory, run, "alice")
    assert first.agent_id and first.init_task_data == {"text": "item 0", "html": "task.html"}
    again = register(factory, run, "alice")
    assert again.agent_id == first.agent_id
    packet = first.packet()
    assert packet["packet_type"] == "agent_details" and packet["data"]["agent_id"] == first.agent_id


def test_a_worker_never_gets_two_units_of_one_assignment(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=2, units_per_assignment=2)
    got = [register(factory, run, "alice", f"hit{i}") for i in range(3)]
    assert got[0].agent_id and got[1].agent_id
    assert got[2].agent_id is None and got[2].failure_reason == claims.NO_UNIT_AVAILABLE
    with transaction(factory) as session:
        assignments = list(session.scalars(select(Agent.assignment_id).where(Agent.task_run_id == run.run_id)))
    assert len(set(assignments)) == 2


def test_submit_records_once_and_a_repeat_keeps_the_first_answer(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1)
    details = register(factory, run, "alice")
    assert details.agent_id is not None
    first = submit(factory, run, details.agent_id, {"rating": "4"})
    repeat = submit(factory, run, details.agent_id, {"rating": "1"})
    assert first.first and not repeat.first
    with transaction(factory) as session:
        agent = session.get(Agent, details.agent_id)
        unit = session.get(Unit, first.unit_id)
        assert agent is not None and unit is not None
        assert agent.outputs == {"rating": "4"} and agent.status == AgentStatus.COMPLETED.value
        assert unit.status == UnitStatus.COMPLETED.value and unit.completed_at is not None
    after = register(factory, run, "alice")
    assert after.agent_id is None and after.failure_reason == claims.ALREADY_SUBMITTED


def test_a_submit_for_a_unit_that_moved_on_is_refused_and_writes_nothing(engine: Engine) -> None:
    """The agent still working but its unit expired meanwhile (a run stopped under it): the submission is
    refused, and the agent's own write is undone with it (PostgreSQL makes both in one statement)."""
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1)
    details = register(factory, run, "alice")
    assert details.agent_id is not None and details.unit_id is not None
    with transaction(factory) as session:
        assert move_unit(session, details.unit_id, UnitStatus.ASSIGNED, UnitStatus.EXPIRED, now=now())
    with pytest.raises(RequestError, match="no longer open for submissions") as refused:
        submit(factory, run, details.agent_id, {"rating": "4"})
    assert refused.value.status_code == 409
    with transaction(factory) as session:
        agent = session.get(Agent, details.agent_id)
        assert agent is not None and agent.status == AgentStatus.IN_TASK.value and agent.outputs is None
        assert session.scalar(select(Unit.status).where(Unit.id == details.unit_id)) == UnitStatus.EXPIRED.value


def test_unknown_and_foreign_agent_ids_are_refused(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1, task_name="one")
    other = make_run(factory, assignments=1, task_name="two")
    details = register(factory, other, "bob")
    assert details.agent_id is not None
    with pytest.raises(RequestError, match="unknown agent id") as unknown:
        submit(factory, run, "forged-agent", {})
    assert unknown.value.status_code == 404
    with pytest.raises(RequestError, match="does not belong to this task run") as foreign:
        submit(factory, run, details.agent_id, {})
    assert foreign.value.status_code == 403


def test_an_illegal_status_write_raises_and_a_lost_race_returns_false(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1, launch=False)
    with transaction(factory) as session:
        unit_id = session.scalar(select(Unit.id).where(Unit.task_run_id == run.run_id))
        assert unit_id is not None
        with pytest.raises(IllegalTransition):
            move_unit(session, unit_id, UnitStatus.CREATED, UnitStatus.COMPLETED, now=now())
        assert move_unit(session, unit_id, UnitStatus.CREATED, UnitStatus.LAUNCHED, now=now())
        assert not move_unit(session, unit_id, UnitStatus.CREATED, UnitStatus.LAUNCHED, now=now())


def _race_worker(url: str, run: RunContext, worker: str, start, results) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    start.wait()
    got = []
    for i in range(4):
        details = register(factory, run, worker, f"hit{i}")
        got.append(details.unit_id)
    results.put((worker, got))
    engine.dispose()


def at_once(target: Any, argses: list[tuple[Any, ...]]) -> list[Any]:
    """Start one process per ``args`` running ``target(*args, start, results)``, release them together with
    ``start``, and return what each put on ``results`` (in the order they finished)."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [context.Process(target=target, args=(*args, start, results)) for args in argses]
    for process in processes:
        process.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    return outcomes


@pytest.mark.system
@pytest.mark.parametrize("processes", [6])
def test_processes_racing_for_units_never_share_one(engine: Engine, database_url: str, processes: int) -> None:
    """Several processes register different workers at the same moment for fewer units than asks:
    every unit goes to exactly one agent, and the same worker never gets two units of one assignment."""
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=5, units_per_assignment=2)  # 10 units, 24 asks
    outcomes = at_once(_race_worker, [(database_url, run, f"w{n}") for n in range(processes)])
    handed = [unit for _, units in outcomes for unit in units if unit is not None]
    assert len(handed) == 10 and len(set(handed)) == 10
    with transaction(factory) as session:
        assigned = session.scalar(select(func.count()).select_from(Unit).where(
            Unit.task_run_id == run.run_id, Unit.status == UnitStatus.ASSIGNED.value))
        pairs = session.execute(select(Agent.worker_id, Agent.assignment_id)
                                .where(Agent.task_run_id == run.run_id)).all()
        owners = Counter(session.scalars(select(Unit.agent_id).where(Unit.task_run_id == run.run_id)))
    assert assigned == 10
    assert len(pairs) == len(set(pairs)) == 10
    assert all(count == 1 for count in owners.values())


def test_a_claim_finding_every_free_unit_locked_never_waits_inside_its_transaction(pg_url: str) -> None:
    """PostgreSQL: while another transaction holds every launched unit's row lock, register_agent does not
    sleep with its own transaction open; it says so (ClaimBusy), and the caller waits with nothing open."""
    engine = make_engine(pg_url)
    upgrade(engine)
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=2)
    reg = Registration.from_request({"provider_data": {
        "worker_name": "w", "assignment_id": "a", "agent_registration_id": "a-w", "provider_type": "mock"}})
    holder = factory()
    try:
        holder.execute(select(Unit.id).where(Unit.task_run_id == run.run_id).with_for_update()).all()
        with pytest.raises(claims.ClaimBusy), transaction(factory) as session:
            claims.register_agent(session, run, reg, now=now(), retry=True)
        with transaction(factory) as session:  # the last attempt answers instead of asking again
            details = claims.register_agent(session, run, reg, now=now(), retry=False)
        assert details.agent_id is None and details.failure_reason == claims.NO_UNIT_AVAILABLE
    finally:
        holder.rollback()
        holder.close()
    assert register(factory, run, "w").agent_id  # the locks gone, the same request gets a unit
    engine.dispose()


def _same_registrations(url: str, run: RunContext, asks: int, start, results) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    start.wait()
    results.put([register(factory, run, "wanda", f"hit{i}").agent_id for i in range(asks)])
    engine.dispose()


@pytest.mark.system
def test_one_registration_asked_by_several_processes_at_once_gets_one_agent(engine: Engine,
                                                                             database_url: str) -> None:
    """The same pages asking on several web processes at the same moment (a reload, a retry through the
    balancer): for each registration, the processes that lose the race to it reconnect to the winner's
    agent, and no second unit is taken."""
    factory = make_sessionmaker(engine)
    asks = 100
    run = make_run(factory, assignments=asks + 5)
    answers = at_once(_same_registrations, [(database_url, run, asks)] * 6)
    per_registration = [set(got) for got in zip(*answers, strict=True)]
    assert all(len(ids) == 1 and None not in ids for ids in per_registration), per_registration
    with transaction(factory) as session:
        agents_made = set(session.scalars(select(Agent.id).where(Agent.task_run_id == run.run_id)))
        assigned = session.scalar(select(func.count()).select_from(Unit).where(
            Unit.task_run_id == run.run_id, Unit.status == UnitStatus.ASSIGNED.value))
    assert agents_made == set().union(*per_registration) and assigned == asks


def _take_made_units(url: str, run_id: int, tries: int, start, results) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    start.wait()
    taken = 0
    for _ in range(tries):
        with transaction(factory) as session:
            taken += screening.take_made_unit(session, run_id, "gold", 7)
    results.put(taken)
    engine.dispose()


@pytest.mark.system
def test_processes_counting_made_units_at_once_never_pass_the_cap(engine: Engine, database_url: str) -> None:
    """max_gold_units (and max_screening_units) counted on the run's row by six processes at once, 60 asks
    for 7 golds: exactly 7 are granted, and the row says 7."""
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1)
    granted = at_once(_take_made_units, [(database_url, run.run_id, 10)] * 6)
    assert sum(granted) == 7
    with transaction(factory) as session:
        assert session.scalar(select(TaskRun.gold_units_made).where(TaskRun.id == run.run_id)) == 7
