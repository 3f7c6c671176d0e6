"""A unit's tokens after each transition, on real Redis and real SQLite and PostgreSQL: every path that moves
a unit gives back, after its commit, exactly the pools the unit's new status frees
(``limiter.units.release_unit_tokens``; DESIGN.md "Limits"):

==========================================  ===================  ==============  ==================
transition (new status)                      run and deployment   worker's run    worker's task
                                                                  (allowed_       (maximum_units_
                                                                  concurrent)     per_worker)
==========================================  ===================  ==============  ==================
submitted (completed)                        freed                freed           kept
handed back: return, disconnect, time-out    kept                 freed           freed
(launched)
expired (Ctrl-C twice, a disconnect or a     freed                freed           freed
time-out while stopping)
==========================================  ===================  ==============  ==================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, TaskRun, Unit
from mephisto_dist.domain.status import AgentStatus, FreedTokens, UnitStatus, tokens_freed
from mephisto_dist.limiter import PoolLimit, keys
from mephisto_dist.limiter.redis_pool import RedisLimiter
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens, token_holder, unit_holder
from mephisto_dist.providers.mock import MockProvider
from mephisto_dist.runners.live.disconnects import disconnect_agents
from mephisto_dist.runs import lifecycle
from mephisto_dist.runs.lifecycle import request_shutdown
from mephisto_dist.runs.returns import hand_back_returned_units
from mephisto_dist.runtime import Runtime
from mephisto_dist.work import claims, registration, submissions
from mephisto_dist.work.claims import Registration, RunContext
from mephisto_dist.work.served import Served
from tests.conftest import wait_for
from tests.factories import make_run, now
from tests.system import make_runtime

TASK = "test-task"
POOLS = ("run", "deployment", "worker_run", "worker_task")


@dataclass(frozen=True)
class Held:
    """One unit of the run, assigned to a worker, holding a token in every pool as the system takes them."""

    unit_id: int
    launch_id: str
    worker_id: int
    agent_id: str

    def pools(self, run_id: int) -> dict[str, tuple[str, str]]:
        launch = token_holder(self.unit_id, self.launch_id)
        return {"run": (launch, keys.run_units_pool(run_id)), "deployment": (launch, keys.deployment_units_pool()),
                "worker_run": (unit_holder(self.unit_id), keys.worker_assigned_pool(run_id, self.worker_id)),
                "worker_task": (unit_holder(self.unit_id), keys.worker_task_units_pool(TASK, self.worker_id))}


def holding(limiter: RedisLimiter, run_id: int, held: Held) -> set[str]:
    """The pools in which the unit still holds its token."""
    return {name for name, (holder, pool) in held.pools(run_id).items() if holder in limiter.holders(pool)}


@pytest.fixture
def rt(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path / "data", database_url, redis_url)
    yield runtime
    runtime.close()


def assign(rt: Runtime, run: RunContext, worker: str, *, hit: bool = False, ref: str = "a1") -> Held:
    """A worker takes a launched unit; its tokens are taken as launching and the claim take them."""
    provider_data = {"worker_name": worker, "assignment_id": f"{ref}-{worker}",
                     "agent_registration_id": f"{ref}-{worker}"}
    if hit:
        provider_data["hit_id"] = f"HIT{ref}"
    with transaction(rt.sessions) as session:
        details = claims.register_agent(session, run, Registration.from_request({"provider_data": provider_data}),
                                        now=now())
        assert isinstance(details, claims.AgentDetails) and details.agent_id and details.unit_id is not None
        launch_id = f"L{details.unit_id}"
        session.execute(update(Unit).where(Unit.id == details.unit_id).values(launch_id=launch_id))
    held = Held(details.unit_id, launch_id, int(details.worker_id or 0), details.agent_id)
    pools = held.pools(run.run_id)
    lease_s = rt.settings.lease_ttl_s
    assert rt.limiter.acquire(pools["run"][0], [PoolLimit(pools["run"][1], 10, lease_s),
                                                PoolLimit(pools["deployment"][1], 0, lease_s)]).ok
    assert rt.limiter.acquire(held.pools(run.run_id)["worker_run"][0], [
        PoolLimit(pools["worker_run"][1], 1, lease_s), PoolLimit(pools["worker_task"][1], 1, None)]).ok
    assert holding(rt.limiter, run.run_id, held) == set(POOLS)
    return held


def hit_run(rt: Runtime, assignments: int = 2) -> RunContext:
    """A run whose units are MTurk HITs (one unit each, named by its HIT)."""
    run = make_run(rt.sessions, assignments=assignments, task_name=TASK)
    with transaction(rt.sessions) as session:
        session.execute(update(TaskRun).where(TaskRun.id == run.run_id).values(
            provider_type="mturk_sandbox", config={**run.config, "task": {
                "task_name": TASK, "allowed_concurrent": 1, "maximum_units_per_worker": 1}}))
        for index, unit_id in enumerate(session.scalars(select(Unit.id).where(Unit.task_run_id == run.run_id)
                                                        .order_by(Unit.id))):
            session.execute(update(Unit).where(Unit.id == unit_id).values(provider_unit_id=f"HITh{index}"))
    return replace(run, provider_type="mturk_sandbox", allowed_concurrent=1, maximum_units_per_worker=1)


def test_what_each_status_frees() -> None:
    assert tokens_freed(UnitStatus.ASSIGNED) == FreedTokens(run_slot=False, worker_slot=False, worker_unit=False)
    assert tokens_freed(UnitStatus.LAUNCHED) == FreedTokens(run_slot=False, worker_slot=True, worker_unit=True)
    for submitted in (UnitStatus.COMPLETED, UnitStatus.ACCEPTED, UnitStatus.REJECTED, UnitStatus.SOFT_REJECTED):
        assert tokens_freed(submitted) == FreedTokens(run_slot=True, worker_slot=True, worker_unit=False)
    for gone in (UnitStatus.EXPIRED, UnitStatus.CREATED):
        assert tokens_freed(gone) == FreedTokens(run_slot=True, worker_slot=True, worker_unit=True)
    with pytest.raises(ValueError, match="task name"):
        UnitTokens(1, 2, None, UnitStatus.EXPIRED, worker_id=3)


@pytest.mark.parametrize("allowed_concurrent", [0, 1], ids=["no-limit", "allowed-concurrent"])
def test_a_submit_frees_the_slots_and_the_unit_still_counts_for_its_worker(rt: Runtime,
                                                                           allowed_concurrent: int) -> None:
    run = make_run(rt.sessions, task_name=TASK)
    if allowed_concurrent:
        with transaction(rt.sessions) as session:
            session.execute(update(TaskRun).where(TaskRun.id == run.run_id).values(
                config={**run.config, "task": {"task_name": TASK, "allowed_concurrent": allowed_concurrent}}))
    held = assign(rt, run, "alice")
    served = Served.for_runtime(rt, run_id=run.run_id)
    assert served.run().allowed_concurrent == allowed_concurrent
    submission = submissions.submit_task(served, held.agent_id, {"answer": 1})
    assert submission.first
    if allowed_concurrent:
        # The worker's next request must find their slot free: given back before the answer.
        assert holding(rt.limiter, run.run_id, held) == {"worker_task"}
    else:
        # No cap and no worker slot anyone waits for: given back off the request, in the next batch.
        wait_for(lambda: holding(rt.limiter, run.run_id, held) == {"worker_task"}, 5.0,
                 message="the deferred release")
    # Given back again (the outbox handler does): nothing changes.
    tokens = UnitTokens(run.run_id, held.unit_id, held.launch_id, UnitStatus.COMPLETED, held.worker_id, TASK)
    assert release_unit_tokens(rt.limiter, [tokens]) == 0
    assert holding(rt.limiter, run.run_id, held) == {"worker_task"}


class HitsNobodyHolds(MockProvider):
    """A marketplace that says every HIT asked about was returned."""

    def hits_not_held(self, hit_ids: Sequence[str]) -> list[str]:
        return list(hit_ids)


def test_a_returned_hit_frees_its_workers_tokens_and_keeps_its_slot(rt: Runtime) -> None:
    """The bug this fixes: the hand-back gave back only the worker's assigned token, so under
    maximum_units_per_worker a worker who returned a HIT counted it until beat's repair."""
    run = hit_run(rt)
    held = assign(rt, run, "alice", hit=True, ref="h0")
    handed = hand_back_returned_units(rt.sessions, HitsNobodyHolds(), rt.limiter, run.run_id,
                                      now=now() + timedelta(minutes=5))
    assert handed == 1
    assert holding(rt.limiter, run.run_id, held) == {"run", "deployment"}


def test_an_ended_mturk_assignment_taken_back_frees_its_workers_tokens_after_the_commit(rt: Runtime) -> None:
    """The bug this fixes: the take-back gave back only the worker's assigned token (the per-task one
    was kept), and gave it back inside the registering transaction, before the unit stopped counting."""
    run = hit_run(rt)
    held = assign(rt, run, "alice", hit=True, ref="h0")
    # MTurk gave the HIT to a new assignment: alice's ended. Inside the registering transaction nothing
    # is given back yet.
    reg = Registration.from_request({"provider_data": {
        "worker_name": "bob", "assignment_id": "h0-bob", "agent_registration_id": "h0-bob", "hit_id": "HITh0"}})
    freed: list[UnitTokens] = []
    with transaction(rt.sessions) as session:
        claims.register_agent(session, run, reg, now=now(), gate=claims.WorkerGate(rt.limiter, 60.0), freed=freed)
        assert holding(rt.limiter, run.run_id, held) == set(POOLS)
    assert [(t.unit_id, t.worker_id, t.status) for t in freed] == [(held.unit_id, held.worker_id, UnitStatus.LAUNCHED)]
    release_unit_tokens(rt.limiter, freed)
    assert holding(rt.limiter, run.run_id, held) == {"run", "deployment"}


def test_the_web_path_takes_back_an_ended_mturk_assignment_and_gives_the_unit_to_the_new_worker(rt: Runtime) -> None:
    run = hit_run(rt)
    held = assign(rt, run, "alice", hit=True, ref="h0")
    served = Served.for_runtime(rt, run_id=run.run_id)
    assert served.run().provider_type == "mturk_sandbox" and served.run().maximum_units_per_worker == 1
    details = registration.request_agent(served, Registration.from_request({"provider_data": {
        "worker_name": "bob", "assignment_id": "h0-bob", "agent_registration_id": "h0-bob", "hit_id": "HITh0"}}))
    assert details.agent_id and details.unit_id == held.unit_id
    # alice's tokens are gone; the unit's run slot stays (it is bob's now, still counting).
    assert holding(rt.limiter, run.run_id, held) == {"run", "deployment"}
    bob = keys.worker_task_units_pool(TASK, int(details.worker_id or 0))
    assert rt.limiter.holders(bob) == {unit_holder(held.unit_id)}
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Agent.status).where(Agent.id == held.agent_id)) == AgentStatus.RETURNED.value


@pytest.mark.parametrize("stopping", [False, True], ids=["handed-back", "expired"])
def test_a_disconnect_frees_the_workers_tokens_and_the_slot_only_when_the_unit_expires(
        rt: Runtime, stopping: bool) -> None:
    run = make_run(rt.sessions, task_name=TASK)
    held = assign(rt, run, "alice")
    if stopping:
        with transaction(rt.sessions) as session:
            request_shutdown(session, run.run_id, "test", now=now())
    assert [d.expired for d in disconnect_agents(rt.sessions, rt.limiter, [held.agent_id], now=now())] == [stopping]
    assert holding(rt.limiter, run.run_id, held) == (set() if stopping else {"run", "deployment"})


@pytest.mark.parametrize("stopping", [False, True], ids=["handed-back", "expired"])
def test_a_time_out_frees_the_workers_tokens_and_the_slot_only_when_the_unit_expires(
        rt: Runtime, stopping: bool) -> None:
    run = make_run(rt.sessions, task_name=TASK)
    held = assign(rt, run, "alice")
    if stopping:
        with transaction(rt.sessions) as session:
            request_shutdown(session, run.run_id, "test", now=now())
    later = now() + timedelta(days=30)
    assert lifecycle.time_out_overdue_units(rt.sessions, rt.limiter, run.run_id, now=later) == 1
    assert holding(rt.limiter, run.run_id, held) == (set() if stopping else {"run", "deployment"})


def test_a_forced_shutdown_frees_every_token_of_the_units_it_expires(rt: Runtime) -> None:
    """The bug this fixes: Ctrl-C twice kept the worker's token under maximum_units_per_worker for the
    units it expired, so the worker counted them in the task's next run until beat's repair."""
    run = make_run(rt.sessions, assignments=3, task_name=TASK)
    held = assign(rt, run, "alice")
    submitted = assign(rt, run, "bob", ref="a2")
    served = Served.for_runtime(rt, run_id=run.run_id)
    submissions.submit_task(served, submitted.agent_id, {"answer": 1})
    assert lifecycle.force_expire(rt.sessions, MockProvider(), rt.limiter, run.run_id, now=now()) == 2
    assert holding(rt.limiter, run.run_id, held) == set()
    served.releases.close()  # the submission's own release (deferred: the run has no cap), as a web process stops
    assert holding(rt.limiter, run.run_id, submitted) == {"worker_task"}  # submitted work still counts


def test_a_unit_expired_while_launched_frees_its_slot(rt: Runtime) -> None:
    run = make_run(rt.sessions, assignments=1, task_name=TASK)
    with transaction(rt.sessions) as session:
        unit_id = session.execute(select(Unit.id).where(Unit.task_run_id == run.run_id)).scalar_one()
        session.execute(update(Unit).where(Unit.id == unit_id).values(launch_id="Lx"))
    holder = token_holder(unit_id, "Lx")
    assert rt.limiter.acquire(holder, [PoolLimit(keys.run_units_pool(run.run_id), 5, 60.0),
                                       PoolLimit(keys.deployment_units_pool(), 0, 60.0)]).ok
    assert lifecycle.expire_available_units(rt.sessions, MockProvider(), rt.limiter, run.run_id, now=now()) == 1
    assert rt.limiter.holders(keys.run_units_pool(run.run_id)) == rt.limiter.holders(keys.deployment_units_pool()) == set()
