"""The gate in front of request_agent on real SQLite and PostgreSQL: onboarding (pass, fail, repeats),
block qualifications and blocked workers, qualification requirements, and the worker_can_do_unit hook."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.blueprints.static_task import ONBOARDING_FILE
from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Agent, OnboardingAgent, Unit, Worker
from mephisto_dist.domain.gate import NOT_QUALIFIED, ONBOARDING_FAILED
from mephisto_dist.domain.qualifications import Requirement
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.errors import RequestError
from mephisto_dist.review.qualifications import create_qualification, grant, granted_values
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration, RunContext
from tests.factories import make_run, now

QUAL = "rater"


def register(factory: sessionmaker[Session], run: RunContext, worker: str,
             assignment_ref: str = "a1") -> claims.AgentDetails:
    reg = Registration.from_request({"provider_data": {
        "worker_name": worker, "assignment_id": assignment_ref,
        "agent_registration_id": f"{assignment_ref}-{worker}", "provider_type": "mock"}})
    with transaction(factory) as session:
        return claims.register_agent(session, run, reg, now=now())


def submit_onboarding(factory: sessionmaker[Session], run: RunContext, agent_id: str, answers: dict[str, Any],
                      *, passed: bool) -> claims.AgentDetails:
    with transaction(factory) as session:
        return claims.submit_onboarding(session, run, agent_id, answers, passed=passed, now=now())


def worker_id(factory: sessionmaker[Session], name: str) -> int | None:
    with transaction(factory) as session:
        return session.scalar(select(Worker.id).where(Worker.worker_name == name))


def grants(factory: sessionmaker[Session], name: str) -> dict[str, int]:
    found = worker_id(factory, name)
    assert found is not None
    with transaction(factory) as session:
        return granted_values(session, found)


def give(factory: sessionmaker[Session], name: str, qualifications: dict[str, int]) -> None:
    with transaction(factory) as session:
        found = claims.get_or_create_worker(session, "mock", name, now=now())
        for qualification, value in qualifications.items():
            qualification_id, _ = create_qualification(session, qualification, now=now())
            grant(session, qualification_id, found, value, now=now())


def count(factory: sessionmaker[Session], model: type[Any]) -> int:
    with transaction(factory) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def onboarding_run(factory: sessionmaker[Session], **kwargs: Any) -> RunContext:
    run = make_run(factory, **kwargs)
    return replace(run, onboarding_qualification=QUAL,
                   onboarding_data={"example": "a sentence", "html": ONBOARDING_FILE})


def test_passing_onboarding_grants_the_qualification_and_continues_to_a_unit(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = onboarding_run(factory, assignments=2)

    first = register(factory, run, "alice")
    assert first.agent_id is not None and first.agent_id.startswith("onboarding_")
    assert first.init_task_data == {"example": "a sentence", "html": "onboarding.html"}
    assert first.unit_id is None and not first.created
    assert register(factory, run, "alice").agent_id == first.agent_id  # a reload: the same onboarding
    assert count(factory, Agent) == 0

    details = submit_onboarding(factory, run, first.agent_id, {"answer": "b"}, passed=True)
    assert details.agent_id is not None and not details.agent_id.startswith("onboarding_")
    assert details.created and details.init_task_data == {"text": "item 0", "html": "task.html"}
    assert grants(factory, "alice") == {QUAL: 1}
    with transaction(factory) as session:
        onboarded = session.get(OnboardingAgent, first.agent_id)
        assert onboarded is not None
        assert onboarded.status == AgentStatus.APPROVED.value and onboarded.outputs == {"answer": "b"}
        agent = session.get(Agent, details.agent_id)
        assert agent is not None and agent.registration_id == "a1-alice"

    # A repeated submission keeps the first verdict and reconnects to the same unit.
    repeat = submit_onboarding(factory, run, first.agent_id, {"answer": "c"}, passed=False)
    assert repeat.agent_id == details.agent_id
    assert grants(factory, "alice") == {QUAL: 1}
    # The page reloaded, or a second visit: straight to a unit, no onboarding.
    assert register(factory, run, "alice").agent_id == details.agent_id
    second = register(factory, run, "alice", "a2")
    assert second.agent_id and not second.agent_id.startswith("onboarding_")
    assert second.init_task_data == {"text": "item 1", "html": "task.html"}
    assert count(factory, OnboardingAgent) == 1


def test_failing_onboarding_refuses_the_worker_now_and_on_every_later_visit(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = onboarding_run(factory, assignments=2, task_name="first")

    onboarding = register(factory, run, "bob")
    assert onboarding.agent_id is not None and onboarding.agent_id.startswith("onboarding_")
    refused = submit_onboarding(factory, run, onboarding.agent_id, {"answer": "a"}, passed=False)
    assert refused.agent_id is None and refused.failure_reason == ONBOARDING_FAILED
    assert refused.packet()["data"]["agent_id"] is None
    assert grants(factory, "bob") == {QUAL: 0, f"{QUAL}-failed": 1}
    with transaction(factory) as session:
        row = session.get(OnboardingAgent, onboarding.agent_id)
        assert row is not None and row.status == AgentStatus.REJECTED.value

    for assignment_ref in ("a1", "a2", "other"):  # the same page reloaded, or any other registration
        again = register(factory, run, "bob", assignment_ref)
        assert again.agent_id is None and again.failure_reason == ONBOARDING_FAILED
    # A repeated (now passing) submission changes nothing.
    repeat = submit_onboarding(factory, run, onboarding.agent_id, {"answer": "b"}, passed=True)
    assert repeat.agent_id is None and repeat.failure_reason == ONBOARDING_FAILED
    # Another run with the same onboarding qualification refuses them too.
    other = onboarding_run(factory, assignments=1, task_name="second")
    assert register(factory, other, "bob").failure_reason == ONBOARDING_FAILED
    assert count(factory, Agent) == 0 and count(factory, OnboardingAgent) == 1
    with transaction(factory) as session:
        statuses = set(session.scalars(select(Unit.status)))
    assert statuses == {UnitStatus.LAUNCHED.value}


def test_a_worker_who_already_passed_goes_straight_to_a_unit(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = onboarding_run(factory, assignments=1)
    give(factory, "carol", {QUAL: 1})
    details = register(factory, run, "carol")
    assert details.agent_id and not details.agent_id.startswith("onboarding_")
    assert count(factory, OnboardingAgent) == 0


def test_onboarding_is_refused_where_there_is_none_and_unknown_ids_are_refused(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    plain = make_run(factory, assignments=1, task_name="plain")
    with pytest.raises(RequestError, match="no onboarding"):
        submit_onboarding(factory, plain, "onboarding_nope", {}, passed=True)
    run = onboarding_run(factory, assignments=1, task_name="onboarded")
    with pytest.raises(RequestError, match="unknown onboarding agent") as unknown:
        submit_onboarding(factory, run, "onboarding_nope", {}, passed=True)
    assert unknown.value.status_code == 404
    other = onboarding_run(factory, assignments=1, task_name="another")
    foreign = register(factory, other, "dan")
    assert foreign.agent_id is not None
    with pytest.raises(RequestError, match="does not belong") as wrong_run:
        submit_onboarding(factory, run, foreign.agent_id, {}, passed=True)
    assert wrong_run.value.status_code == 403


def test_block_qualification_and_blocked_workers_are_refused(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    plain = make_run(factory, assignments=3, task_name="plain")
    run = replace(make_run(factory, assignments=3, task_name="gated"), block_qualification="blocked-here")
    give(factory, "erin", {"blocked-here": 0})  # holding it at any value blocks, as in Mephisto
    give(factory, "frank", {})

    assert register(factory, run, "erin").failure_reason == NOT_QUALIFIED
    assert register(factory, plain, "erin").agent_id  # the block qualification is this run's only
    assert register(factory, run, "frank").agent_id
    assert register(factory, run, "newcomer").agent_id

    with transaction(factory) as session:
        session.execute(update(Worker).where(Worker.worker_name == "frank").values(is_blocked=True))
    # Blocked from every task, gated or not; the unit they hold stays theirs to reconnect to.
    assert register(factory, plain, "frank", "a2").failure_reason == NOT_QUALIFIED
    assert register(factory, run, "frank", "a2").failure_reason == NOT_QUALIFIED
    assert register(factory, run, "frank").agent_id


REQUIREMENTS = (
    {"qualification_name": "skill", "comparator": "GreaterThanOrEqualTo", "value": 3},
    {"qualification_name": "level", "comparator": "In", "value": [1, 2]},
    {"qualification_name": "banned", "comparator": "DoesNotExist"},
    {"qualification_name": "region", "comparator": "NotEqualTo", "value": 7},
)


@pytest.mark.parametrize(("granted", "allowed"), [
    ({"skill": 3, "level": 2, "region": 1}, True),
    ({"skill": 9, "level": 1, "region": 1}, True),
    ({"skill": 2, "level": 1, "region": 1}, False),  # GreaterThanOrEqualTo
    ({"skill": 5, "level": 3, "region": 1}, False),  # In
    ({"skill": 5, "level": 1, "region": 1, "banned": 0}, False),  # DoesNotExist
    ({"skill": 5, "level": 1, "region": 7}, False),  # NotEqualTo
    ({"skill": 5, "level": 1}, False),  # a value comparison needs the qualification
])
def test_qualification_requirements(engine: Engine, granted: dict[str, int], allowed: bool) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1)
    run = replace(run, requirements=tuple(Requirement.from_dict(r) for r in REQUIREMENTS))
    give(factory, "grace", granted)
    details = register(factory, run, "grace")
    if allowed:
        assert details.agent_id
    else:
        assert details.agent_id is None and details.failure_reason == NOT_QUALIFIED
        assert count(factory, Agent) == 0


def test_a_newcomer_who_cannot_meet_the_requirements_is_refused_without_a_write(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = replace(make_run(factory, assignments=1),
                  requirements=(Requirement.from_dict(REQUIREMENTS[0]),))
    details = register(factory, run, "stranger")
    assert details.failure_reason == NOT_QUALIFIED and details.worker_id is None
    assert count(factory, Worker) == 0


def test_worker_can_do_unit_skips_the_units_a_worker_may_not_take(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    seen: list[tuple[str, str]] = []

    def can_do(worker_name: str, unit_data: dict[str, Any]) -> bool:
        seen.append((worker_name, unit_data["text"]))
        return worker_name != "picky" or unit_data["text"] in ("item 2", "item 57")

    run = replace(make_run(factory, assignments=60), hooks=TaskHooks(worker_can_do_unit=can_do))
    picky = register(factory, run, "picky")
    assert picky.init_task_data == {"text": "item 2", "html": "task.html"}
    assert seen == [("picky", "item 0"), ("picky", "item 1"), ("picky", "item 2")]
    assert register(factory, run, "easy").init_task_data == {"text": "item 0", "html": "task.html"}
    # Past the first batch of candidates.
    later = register(factory, run, "picky", "a2")
    assert later.init_task_data == {"text": "item 57", "html": "task.html"}
    none_left = register(factory, run, "picky", "a3")
    assert none_left.agent_id is None and none_left.failure_reason == claims.NO_UNIT_AVAILABLE
    assert count(factory, Agent) == 3


def test_a_failing_worker_can_do_unit_hook_is_an_error_not_a_refusal(engine: Engine) -> None:
    factory = make_sessionmaker(engine)

    def broken(worker_name: str, unit_data: dict[str, Any]) -> bool:
        raise KeyError("missing")

    run = replace(make_run(factory, assignments=1), hooks=TaskHooks(worker_can_do_unit=broken))
    with pytest.raises(RequestError, match="worker_can_do_unit hook failed") as failed:
        register(factory, run, "harry")
    assert failed.value.status_code == 500


def test_run_context_from_a_stored_config(tmp_path: Path) -> None:
    hooks_file = tmp_path / "hooks.py"
    hooks_file.write_text("onboarding_data = {'example': 'x'}\n"
                          "def validate_onboarding(data):\n    return data.get('a') == '1'\n")
    config = {"task": {"allowed_concurrent": 2},
              "blueprint": {"onboarding_qualification": QUAL, "block_qualification": "nope",
                            "hooks_module": str(hooks_file),
                            "qualifications": [dict(REQUIREMENTS[0])]}}
    run = RunContext.from_config(1, 1, "t", "mock", "/b", config)
    assert run.gated and run.allowed_concurrent == 2
    assert run.onboarding_qualification == QUAL and run.block_qualification == "nope"
    assert [r.qualification_name for r in run.requirements] == ["skill"]
    assert run.onboarding_data == {"example": "x", "html": "onboarding.html"}
    assert run.hooks.validate_onboarding is not None and run.hooks.validate_onboarding({"a": "1"})
    plain = RunContext.from_config(1, 1, "t", "mock", "/b", {"task": {}, "blueprint": {}})
    assert not plain.gated and plain.hooks.worker_can_do_unit is None


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lower())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_the_gate_costs_nothing_when_off_and_one_query_when_on(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    plain = make_run(factory, assignments=3, task_name="plain")
    register(factory, plain, "ivy", "warmup")  # the worker exists: the common case
    with statements(engine) as ungated:
        assert register(factory, plain, "ivy").agent_id
    gated = replace(make_run(factory, assignments=3, task_name="gated"), block_qualification="blocked")
    with statements(engine) as with_gate:
        assert register(factory, gated, "ivy").agent_id
    assert not any("qualification" in s or "onboarding" in s for s in ungated)
    assert sum("granted_qualification" in s for s in with_gate) == 1
    assert len(with_gate) == len(ungated) + 1


def test_an_abandoned_onboarding_times_out_and_the_worker_starts_afresh(engine: Engine) -> None:
    from datetime import timedelta

    from mephisto_dist.runs.lifecycle import time_out_abandoned_onboarding

    factory = make_sessionmaker(engine)
    run = onboarding_run(factory, assignments=1)
    first = register(factory, run, "gina")
    assert first.agent_id is not None and first.agent_id.startswith("onboarding_")
    assert time_out_abandoned_onboarding(factory, run.run_id, now=now()) == 0  # still fresh
    later = now() + timedelta(seconds=1800 + 1)  # the run's default assignment duration has passed
    assert time_out_abandoned_onboarding(factory, run.run_id, now=later) == 1
    assert time_out_abandoned_onboarding(factory, run.run_id, now=later) == 0  # idempotent
    with transaction(factory) as session:
        stale = session.get(OnboardingAgent, first.agent_id)
        assert stale is not None and stale.status == AgentStatus.TIMEOUT.value
    again = register(factory, run, "gina")
    assert again.agent_id is not None and again.agent_id.startswith("onboarding_")
    assert again.agent_id != first.agent_id
