"""Qualification requirements (pure, every Mephisto comparator), grants, blocks and onboarding resets on
real SQLite and PostgreSQL, and the ``workers`` / ``qualifications`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import GrantedQualification, ProviderCall, TaskRun, Worker
from mephisto_dist.domain.qualifications import Comparator, Requirement, meets_requirements, requirement_met
from mephisto_dist.errors import ConfigError, NotFoundError
from mephisto_dist.review.decisions import CallStatus, perform_call
from mephisto_dist.review.qualifications import (
    block_worker,
    clear_onboarding,
    create_qualification,
    find_qualification,
    find_worker,
    grant,
    granted_values,
    revoke,
    unblock_worker,
    worker_is_blocked,
)
from tests.factories import now
from tests.test_review import NOT_FOUND, assert_refused, completed_units, run_cli

GRANTED = {"skill": 3, "passed": 1}


@pytest.mark.parametrize(("comparator", "value", "met"), [
    ("Exists", None, True),
    ("DoesNotExist", None, False),
    ("EqualTo", 3, True), ("EqualTo", 4, False),
    ("NotEqualTo", 4, True), ("NotEqualTo", 3, False),
    ("GreaterThan", 2, True), ("GreaterThan", 3, False),
    ("GreaterThanOrEqualTo", 3, True), ("GreaterThanOrEqualTo", 4, False),
    ("LessThan", 4, True), ("LessThan", 3, False),
    ("LessThanOrEqualTo", 3, True), ("LessThanOrEqualTo", 2, False),
    ("In", [1, 3], True), ("In", [1, 2], False),
    ("NotIn", [1, 2], True), ("NotIn", [3], False),
])
def test_each_comparator_on_a_held_qualification(comparator: str, value: Any, met: bool) -> None:
    requirement = {"qualification_name": "skill", "comparator": comparator, "value": value}
    assert meets_requirements(GRANTED, [requirement]) is met
    assert requirement_met(GRANTED, Requirement.from_dict(requirement)) is met


@pytest.mark.parametrize("comparator", list(Comparator))
def test_each_comparator_on_a_qualification_not_held(comparator: Comparator) -> None:
    value = [0, 1] if comparator in (Comparator.IN, Comparator.NOT_IN) else 0
    requirement = Requirement.from_dict({"qualification_name": "other", "comparator": comparator.value,
                                         "value": value})
    # Only DoesNotExist is met without a grant: every value comparison needs a value.
    assert requirement_met(GRANTED, requirement) is (comparator == Comparator.DOES_NOT_EXIST)


def test_every_requirement_must_hold_and_providers_narrow_them() -> None:
    both: list[Requirement | dict[str, Any]] = [
        {"qualification_name": "skill", "comparator": "GreaterThan", "value": 1},
            Requirement("passed", Comparator.EQUAL_TO, 1)]
    assert meets_requirements(GRANTED, both)
    assert not meets_requirements(GRANTED, [*both, {"qualification_name": "blocked",
                                                    "comparator": "Exists", "value": None}])
    mturk_only = {"qualification_name": "masters", "comparator": "Exists", "applicable_providers": ["mturk"]}
    assert meets_requirements(GRANTED, [mturk_only], provider_type="mock")
    assert not meets_requirements(GRANTED, [mturk_only], provider_type="mturk")
    assert meets_requirements(GRANTED, [])


@pytest.mark.parametrize(("raw", "needle"), [
    ({"qualification_name": "q", "comparator": "Bigger", "value": 1}, "unknown comparator 'Bigger'"),
    ({"qualification_name": "q", "comparator": "In", "value": 1}, "needs a list of integers"),
    ({"qualification_name": "q", "comparator": "EqualTo", "value": "1"}, "needs an integer"),
    ({"comparator": "Exists"}, "no qualification_name"),
])
def test_malformed_requirements_are_config_errors(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        meets_requirements(GRANTED, [raw])


# -- in the database ---------------------------------------------------------------------------------


def test_grant_change_and_revoke(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    completed_units(factory, {"alice": 1})
    with transaction(factory) as session:
        worker_id = find_worker(session, "alice").id
        qualification_id, created = create_qualification(session, "skill", now=now())
        assert created and create_qualification(session, "skill", now=now()) == (qualification_id, False)
        grant(session, qualification_id, worker_id, 2, now=now())
        grant(session, qualification_id, worker_id, 5, now=now())
    with transaction(factory) as session:
        assert granted_values(session, worker_id) == {"skill": 5}
        assert meets_requirements(granted_values(session, worker_id),
                                  [{"qualification_name": "skill", "comparator": "GreaterThan", "value": 4}])
        assert revoke(session, qualification_id, worker_id) and not revoke(session, qualification_id, worker_id)
        assert granted_values(session, worker_id) == {}
        with pytest.raises(NotFoundError, match="no qualification named 'skil'; known: skill"):
            find_qualification(session, "skil")
        with pytest.raises(NotFoundError, match="no worker named 'nobody'"):
            find_worker(session, "nobody")


def test_blocked_everywhere_or_by_a_block_qualification(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    completed_units(factory, {"bob": 1, "carol": 1})
    with transaction(factory) as session:
        bob, carol = find_worker(session, "bob").id, find_worker(session, "carol").id
        assert not worker_is_blocked(session, bob, None) and not worker_is_blocked(session, bob, "blocked-x")
        block_id = block_worker(session, bob, "spam", now=now())
        assert block_id is not None and block_worker(session, bob, "again", now=now()) is None
        qualification_id, _ = create_qualification(session, "blocked-x", now=now())
        grant(session, qualification_id, carol, 0, now=now())  # any value blocks, as DoesNotExist would
    with transaction(factory) as session:
        assert worker_is_blocked(session, bob, None) and worker_is_blocked(session, bob, "blocked-x")
        assert worker_is_blocked(session, carol, "blocked-x") and not worker_is_blocked(session, carol, None)
        assert not worker_is_blocked(session, carol, "blocked-y")
        unblock_id = unblock_worker(session, bob, "forgiven", now=now())
        assert unblock_id is not None and unblock_worker(session, bob, "x", now=now()) is None
    # The block was lifted before its provider call ran: only the unblock is made.
    assert perform_call(factory, block_id) == CallStatus.SKIPPED
    assert perform_call(factory, unblock_id) == CallStatus.DONE
    with transaction(factory) as session:
        keys = [c.idempotency_key for c in session.scalars(select(ProviderCall).order_by(ProviderCall.id))]
        assert keys[0].startswith(f"block:{bob}:") and keys[1].startswith(f"unblock:{bob}:")
        assert not worker_is_blocked(session, bob, None)


def test_clear_onboarding_removes_the_qualification_and_its_failed_twin(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    completed_units(factory, {"dave": 1})
    with transaction(factory) as session:
        dave = find_worker(session, "dave").id
        for name in ("onboarded", "onboarded-failed", "other"):
            grant(session, create_qualification(session, name, now=now())[0], dave, 0, now=now())
        assert clear_onboarding(session, dave, "onboarded") == ["onboarded", "onboarded-failed"]
        assert granted_values(session, dave) == {"other": 0}
        assert clear_onboarding(session, dave, "onboarded") == []


# -- the commands ------------------------------------------------------------------------------------


@pytest.mark.system
def test_qualification_commands(tmp_path: Path, engine: Engine, database_url: str) -> None:
    factory = make_sessionmaker(engine)
    completed_units(factory, {"erin": 1})

    def cli(*args: str) -> str:
        result = run_cli(tmp_path, database_url, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert_refused(run_cli(tmp_path, database_url, "qualifications", "grant", "skill", "erin"),
                   "no qualification named 'skill'", code=NOT_FOUND)
    assert "created" in cli("qualifications", "create", "skill")
    assert_refused(run_cli(tmp_path, database_url, "qualifications", "grant", "skill", "nobody"),
                   "no worker named 'nobody'", code=NOT_FOUND)
    assert_refused(run_cli(tmp_path, database_url, "qualifications", "grant", "skill", "erin", "--value", "lots"),
                   "--value must be a whole number", "'lots'")
    assert "granted skill=7 to worker erin" in cli("qualifications", "grant", "skill", "erin", "--value", "7")
    listed = cli("qualifications", "list")
    assert "skill" in listed
    holders = cli("qualifications", "list", "skill")
    assert "erin" in holders and "7" in holders
    assert "revoked skill" in cli("qualifications", "revoke", "skill", "erin")
    assert_refused(run_cli(tmp_path, database_url, "qualifications", "revoke", "skill", "erin"),
                   "worker erin does not hold 'skill'")
    with transaction(factory) as session:
        assert session.scalars(select(GrantedQualification)).all() == []

    cli("qualifications", "create", "onboarded-failed")
    cli("qualifications", "grant", "onboarded-failed", "erin", "--value", "0")
    assert "removed onboarded-failed from worker erin" in cli("workers", "clear-onboarding", "erin",
                                                              "--qualification", "onboarded")
    assert_refused(run_cli(tmp_path, database_url, "workers", "clear-onboarding", "erin", "--qualification",
                           "ghost"), "no qualification named 'ghost'", code=NOT_FOUND)


@pytest.mark.system
def test_workers_list_block_and_unblock(tmp_path: Path, engine: Engine, database_url: str) -> None:
    factory = make_sessionmaker(engine)
    run, units = completed_units(factory, {"frank": 2, "gina": 1})
    with transaction(factory) as session:
        session.execute(update(TaskRun).where(TaskRun.id == run.run_id)
                        .values(config={**run.config, "blueprint": {"block_qualification": "no-review-task"}}))
    from mephisto_dist.review.decisions import Decision, decide

    with transaction(factory) as session:
        decide(session, units["frank"][0], Decision.APPROVE, now=now())
        decide(session, units["frank"][1], Decision.REJECT, now=now(), note="wrong")
        decide(session, units["gina"][0], Decision.SOFT_REJECT, now=now())

    blocked = run_cli(tmp_path, database_url, "workers", "block", "frank", "--reason", "copy-paste answers")
    assert blocked.returncode == 0 and "frank blocked from every task" in blocked.stdout, blocked.stderr
    again = run_cli(tmp_path, database_url, "workers", "block", "frank")
    assert "already blocked" in again.stdout
    soft = run_cli(tmp_path, database_url, "workers", "block", "gina", "--qualification", "no-review-task")
    assert soft.returncode == 0, soft.stderr
    assert_refused(run_cli(tmp_path, database_url, "workers", "block", "nobody"), "no worker named 'nobody'", code=NOT_FOUND)

    listed = run_cli(tmp_path, database_url, "workers", "list", "--task-name", "review-task")
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in listed.stdout.splitlines() if line.startswith("│")}
    assert rows["frank"] == ["mock", "2", "1", "1", "0", "yes: copy-paste answers"]
    assert rows["gina"] == ["mock", "1", "0", "0", "1", "by no-review-task"]
    assert_refused(run_cli(tmp_path, database_url, "workers", "list", "--task-name", "ghost"), "no task named", code=NOT_FOUND)

    with transaction(factory) as session:
        frank = session.scalars(select(Worker).where(Worker.worker_name == "frank")).one()
        assert frank.is_blocked and frank.block_reason == "copy-paste answers"
        [call] = session.scalars(select(ProviderCall).where(ProviderCall.action == "block")).all()
        assert (call.status, call.attempts) == ("done", 1)  # no Redis configured: made by the command
    assert "frank unblocked" in run_cli(tmp_path, database_url, "workers", "unblock", "frank").stdout
    assert "no longer blocked" in run_cli(tmp_path, database_url, "workers", "unblock", "gina",
                                          "--qualification", "no-review-task").stdout
    with transaction(factory) as session:
        worker_ids = list(session.scalars(select(Worker.id)))
        assert not any(worker_is_blocked(session, w, "no-review-task") for w in worker_ids)
