"""What the live sweep does with a hosted assignment once its runner is gone or done, on the clock it is
given (``now``), with a real database (SQLite and PostgreSQL) and Redis: a runner whose lease lapsed ends
its assignment (agents ``expired``, units back in the pool); after a runner returned, agents that have not
submitted within the run's ``mephisto.task.submission_timeout`` time out (a ``partner disconnect`` keeps
its status) and their units expire, or go back to the pool when alone in their assignment."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Agent, TaskRun, Unit
from mephisto_dist.db.transitions import move_agent
from mephisto_dist.domain.assignments import submissions_overdue, unit_after_time_out
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.limiter import keys
from mephisto_dist.limiter.redis_pool import RedisLimiter
from mephisto_dist.runners.assignments import waiting
from mephisto_dist.runners.assignments.lease import (
    RUNNING,
    LeaseLost,
    RunnerLease,
    claim_end,
    ended_at,
    ended_value,
    is_lost,
    is_running,
)
from mephisto_dist.runners.assignments.recovery import Restart, end_assignments
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.conftest import wait_for
from tests.factories import make_run, now

LEASE_S = 3.0
SUBMISSION_TIMEOUT_S = 5


@pytest.fixture
def limiter(redis_url: str) -> Iterator[RedisLimiter]:
    limiter = RedisLimiter.from_url(redis_url)
    yield limiter


@pytest.fixture(autouse=True)
def fresh_hosted_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ids repeat between the test databases: forget what an earlier test's run 1 was."""
    monkeypatch.setattr(waiting, "_HOSTED", {})


def hosted_run(factory: sessionmaker[Session], workers: list[str], *, units: int, task_name: str,
               runner_restarts: int = 0) -> tuple[int, dict[str, str]]:
    """A run whose script hosts its assignments, one assignment of ``units`` units, its agents ``in task``."""
    run = make_run(factory, assignments=1, units_per_assignment=units, task_name=task_name)
    agents = {}
    for worker in workers:
        reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": worker}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            agents[worker] = details.agent_id
    config: dict[str, Any] = {**run.config, "script": {"hosts_assignments": True},
                              "task": {**run.config["task"], "submission_timeout": SUBMISSION_TIMEOUT_S,
                                       "runner_restarts": runner_restarts}}
    with transaction(factory) as session:
        session.execute(update(TaskRun).where(TaskRun.id == run.run_id).values(config=config))
    return run.run_id, agents


def assignment_of(factory: sessionmaker[Session], agent_id: str) -> int:
    with transaction(factory) as session:
        return int(session.scalar(select(Agent.assignment_id).where(Agent.id == agent_id)) or 0)


def state(factory: sessionmaker[Session], run_id: int) -> tuple[dict[str, str], list[tuple[str, str | None]]]:
    with transaction(factory) as session:
        agents = {str(a): str(s) for a, s in session.execute(
            select(Agent.id, Agent.status).where(Agent.task_run_id == run_id))}
        units = [(str(s), a) for s, a in session.execute(
            select(Unit.status, Unit.agent_id).where(Unit.task_run_id == run_id).order_by(Unit.id))]
    return agents, units


def test_the_pure_rules() -> None:
    ended = datetime(2026, 1, 1, 12, 0, 0)
    assert not submissions_overdue(ended, 5, ended + timedelta(seconds=4.9))
    assert submissions_overdue(ended, 5, ended + timedelta(seconds=5))
    assert submissions_overdue(ended, 0, ended), "0: at once, as Mephisto's await_submit(timeout=0)"
    assert unit_after_time_out(1, stopping=False)
    assert not unit_after_time_out(2, stopping=False) and not unit_after_time_out(1, stopping=True)
    assert ended_at(ended_value(ended.astimezone())) == ended.astimezone()
    assert ended_at(RUNNING) is None and ended_at(None) is None and ended_at(b"ended") is None


def test_agents_that_do_not_submit_in_time_after_their_runner_returned_time_out(
        engine: Engine, redis_client: redis.Redis, limiter: RedisLimiter) -> None:
    factory = make_sessionmaker(engine)
    run_id, agents = hosted_run(factory, ["alice", "bob"], units=2, task_name="pair")
    with transaction(factory) as session:  # bob's partner left: he may still submit his work as is
        assert move_agent(session, agents["bob"], AgentStatus.IN_TASK, AgentStatus.PARTNER_DISCONNECT, now=now())
    assignment = assignment_of(factory, agents["alice"])
    returned = now().replace(microsecond=0)  # the lease keeps milliseconds
    redis_client.set(keys.assignment_runner_lease(assignment), RUNNING)

    later = returned + timedelta(seconds=600)
    assert end_assignments(factory, redis_client, limiter, lease_s=LEASE_S, now=later).unsubmitted == [], \
        "a runner still running is waited for"
    redis_client.set(keys.assignment_runner_lease(assignment), ended_value(returned))
    early = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S,
                            now=returned + timedelta(seconds=SUBMISSION_TIMEOUT_S - 1))
    assert early.unsubmitted == [] and early.lost == []

    due = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S,
                          now=returned + timedelta(seconds=SUBMISSION_TIMEOUT_S))
    assert sorted((e.agent_id, e.status) for e in due.unsubmitted) == sorted(
        [(agents["alice"], AgentStatus.TIMEOUT), (agents["bob"], AgentStatus.PARTNER_DISCONNECT)])
    assert due.lost == [] and due.expired_runs == {run_id}
    statuses, units = state(factory, run_id)
    assert statuses == {agents["alice"]: "timeout", agents["bob"]: "partner disconnect"}
    assert sorted(units) == sorted([("expired", agents["alice"]), ("expired", agents["bob"])]), \
        "a pair's conversation cannot be taken up alone: both units expire, each keeping its agent"
    assert limiter.holders(keys.run_units_pool(run_id)) == set()

    again = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S, now=returned + timedelta(hours=1))
    assert again.unsubmitted == [] and again.lost == []


def test_a_unit_alone_in_its_assignment_goes_back_to_the_pool_and_a_submitted_one_is_left_alone(
        engine: Engine, redis_client: redis.Redis, limiter: RedisLimiter) -> None:
    factory = make_sessionmaker(engine)
    solo_run, solo = hosted_run(factory, ["carol"], units=1, task_name="solo")
    done_run, done = hosted_run(factory, ["dave"], units=1, task_name="done")
    returned = now().replace(microsecond=0)  # the lease keeps milliseconds
    for agent_id in (solo["carol"], done["dave"]):
        redis_client.set(keys.assignment_runner_lease(assignment_of(factory, agent_id)), ended_value(returned))
    with transaction(factory) as session:
        assert move_agent(session, done["dave"], AgentStatus.IN_TASK, AgentStatus.COMPLETED, now=now())
    due = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S,
                          now=returned + timedelta(seconds=SUBMISSION_TIMEOUT_S + 1))
    assert [(e.agent_id, e.status) for e in due.unsubmitted] == [(solo["carol"], AgentStatus.TIMEOUT)]
    assert due.expired_runs == frozenset()
    assert state(factory, solo_run) == ({solo["carol"]: "timeout"}, [("launched", None)])
    assert state(factory, done_run)[0] == {done["dave"]: "completed"}


def test_a_stopping_runs_unit_expires_and_a_lost_runner_hands_its_units_back(
        engine: Engine, redis_client: redis.Redis, limiter: RedisLimiter) -> None:
    factory = make_sessionmaker(engine)
    stopping_run, stopping = hosted_run(factory, ["erin"], units=1, task_name="stopping")
    lost_run, lost = hosted_run(factory, ["frank", "grace"], units=2, task_name="lost")
    with transaction(factory) as session:
        session.execute(update(TaskRun).where(TaskRun.id == stopping_run).values(shutdown_requested_at=now()))
    returned = now().replace(microsecond=0)  # the lease keeps milliseconds
    redis_client.set(keys.assignment_runner_lease(assignment_of(factory, stopping["erin"])), ended_value(returned))
    # The lost pair's lease is missing: its runner died. Within the start's grace nothing happens.
    soon = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S, now=now())
    assert soon.lost == []
    assert [e.agent_id for e in soon.unsubmitted] == [], "erin's time is not over yet"
    later = now() + timedelta(seconds=max(LEASE_S * 3, SUBMISSION_TIMEOUT_S + 1))
    due = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S, now=later)
    assert sorted(e.agent_id for e in due.lost) == sorted(lost.values())
    assert {e.status for e in due.lost} == {AgentStatus.EXPIRED}
    assert [(e.agent_id, e.status) for e in due.unsubmitted] == [(stopping["erin"], AgentStatus.TIMEOUT)]
    assert state(factory, stopping_run) == ({stopping["erin"]: "timeout"}, [("expired", stopping["erin"])])
    assert state(factory, lost_run) == ({lost["frank"]: "expired", lost["grace"]: "expired"},
                                        [("launched", None), ("launched", None)])


def test_a_lost_runner_is_restarted_once_per_sweep_claim_and_at_most_runner_restarts_times(
        engine: Engine, redis_client: redis.Redis, limiter: RedisLimiter) -> None:
    """``runner_restarts: 2``: a lapsed lease is claimed for a restart (nothing moves, the pages hear
    nothing); a second sweep meanwhile claims nothing; the restarted runner takes the claim over once (a
    repeated delivery does not). A second death is the second restart; a claim no runner takes lapses
    and counts; the third loss ends the assignment as without restarts."""
    factory = make_sessionmaker(engine)
    run_id, agents = hosted_run(factory, ["hana", "ivan"], units=2, task_name="restarts", runner_restarts=2)
    assignment = assignment_of(factory, agents["hana"])
    lease_key = keys.assignment_runner_lease(assignment)
    later = now() + timedelta(seconds=LEASE_S * 3)
    first = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S, now=later)
    assert first.lost == []
    assert [Restart(r.assignment_id, r.claim, tuple(sorted(r.agent_ids))) for r in first.restarts] == [
        Restart(assignment, "restarting:1", tuple(sorted(agents.values())))]
    assert end_assignments(factory, redis_client, limiter, lease_s=LEASE_S, now=later).restarts == []
    assert state(factory, run_id) == ({a: "in task" for a in agents.values()},
                                      [("assigned", agents["hana"]), ("assigned", agents["ivan"])])
    restarted = RunnerLease(redis_client, assignment)
    assert restarted.take("restarting:1")
    assert not RunnerLease(redis_client, assignment).take("restarting:1"), "a repeated delivery runs nothing"
    assert redis_client.get(lease_key) == restarted.value.encode() and is_running(restarted.value)

    redis_client.delete(lease_key)  # the restarted runner died too
    second = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S, now=later)
    assert [r.claim for r in second.restarts] == ["restarting:2"]
    redis_client.delete(lease_key)  # no runner worker took the claim: it lapsed
    third = end_assignments(factory, redis_client, limiter, lease_s=LEASE_S, now=later)
    assert third.restarts == []
    assert sorted(e.agent_id for e in third.lost) == sorted(agents.values())
    assert state(factory, run_id) == ({a: "expired" for a in agents.values()},
                                      [("launched", None), ("launched", None)])
    assert is_lost(redis_client.get(lease_key)), "the sweep's claim to end it: a runner coming back finds it"


def test_a_runner_paused_past_its_lease_finds_it_no_longer_its_own(redis_client: redis.Redis) -> None:
    """Fencing: the sweep claimed the lapsed key (``lost:``); the runner's renewals stop at once, never
    write it back, its next check raises ``LeaseLost``, and its end leaves the sweep's claim alone."""
    with RunnerLease(redis_client, 41, lease_s=0.3) as lease:
        key = keys.assignment_runner_lease(41)
        assert redis_client.get(key) == lease.value.encode()
        lease.check()
        assert claim_end(redis_client, 41, None) is False, "a held lease is not the sweep's to end"
        redis_client.set(key, "lost:1")  # the sweep's claim, as after a pause past the lease
        wait_for(lambda: lease.lost, message="the renewer to find the lease gone")
        with pytest.raises(LeaseLost):
            lease.check()
    assert redis_client.get(key) == b"lost:1"


def test_a_lease_redis_lost_is_set_again_by_its_runner_and_is_then_not_the_sweeps(redis_client: redis.Redis) -> None:
    """A key Redis lost (flushed, restarted) while its runner runs: nobody claimed it, so the runner sets
    it again at its next renewal or check and runs on; the sweep's claim then fails."""
    key = keys.assignment_runner_lease(42)
    with RunnerLease(redis_client, 42, lease_s=0.3) as lease:
        redis_client.delete(key)
        wait_for(lambda: redis_client.get(key) == lease.value.encode(), message="the renewer to set it again")
        assert claim_end(redis_client, 42, None) is False
        lease.check()
        assert not lease.lost
    assert ended_at(redis_client.get(key)) is not None, "its end is written: the key was its own"
    # A runner that checks past its lease time asks Redis, and the sweep's claim, once taken, stands.
    with RunnerLease(redis_client, 43, lease_s=60) as held:
        redis_client.set(keys.assignment_runner_lease(43), "lost:2")
        held.check()  # within its lease time since the last renewal: no need to ask
        held._valid_until = 0.0  # as after a pause: the lease time since the last renewal has passed
        with pytest.raises(LeaseLost):
            held.check()
    assert redis_client.get(keys.assignment_runner_lease(43)) == b"lost:2"
