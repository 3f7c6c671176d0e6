"""Hosted assignments the live sweep ends, found by their runner's lease (:mod:`.lease`):

- the runner died (the runner worker SIGKILLed, its machine lost, its process paused past its lease):
  agents ``in task``, started more than a grace ago, whose assignment's lease is gone. The sweep first
  claims the lease key (``lost:<time>``, :func:`~.lease.claim_end`), so a runner that comes back finds it
  no longer its own and touches nothing (:mod:`.lease`, "Fencing"); then each such assignment ends in one
  transaction: its agents
  ``in task -> expired`` (their pages are told the task is no longer available), its units ``assigned ->
  launched`` (back to the pool for new workers: the units keep their run slots, the workers' tokens are
  given back). ``cleanup_assignment`` is not called: the runner died with its process.
- the runner returned more than the run's ``submission_timeout`` ago (Mephisto's wait for
  ``final_submission`` after ``run_assignment``/``run_unit``) and some agents have not submitted: an agent
  still ``in task`` times out (``timeout``, its page told), one in ``partner disconnect`` keeps that status
  (it says why); the unit of either expires, or goes back to the pool when it is its assignment's only
  unit and the run is not stopping (:func:`~mephisto_dist.domain.assignments.unit_after_time_out`).

Either way what the agents said stays in ``agent_message`` and ``export`` shows it as partial work; nothing
is paid for it (payments follow submitted units, and each relaunched unit is submitted, and paid, once).

A run with ``mephisto.task.runner_restarts`` N > 0 restarts a lost runner instead, up to N times per
assignment: the sweep claims the lease key (:func:`~.lease.claim_restart`: one sweep wins, so two sweeps
restart it once) and the caller sends the restart to the runner workers (:func:`~.host.restart_assignment`,
which replays the stored messages, :mod:`.replay`); nothing moves in the database and the pages are told
nothing. A claim no runner worker takes lapses and counts; past N the assignment ends as above.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, OnboardingAgent, Unit
from mephisto_dist.db.transitions import move_agent, move_onboarding_agent, move_unit
from mephisto_dist.domain.assignments import submissions_overdue, unit_after_time_out
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.limiter import Limiter, keys
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens
from mephisto_dist.runners.assignments.lease import (
    claim_end,
    claim_restart,
    ended_at,
    give_up_restart,
    is_lost,
    restart_number,
)
from mephisto_dist.runners.assignments.waiting import HostedRun, hosted_runs

START_GRACE_LEASES = 2
"""A start is given this many lease times to take its lease before the sweep looks for it."""

_OPEN = (AgentStatus.IN_TASK.value, AgentStatus.PARTNER_DISCONNECT.value)


@dataclass(frozen=True)
class Ended:
    agent_id: str
    unit_id: int
    run_id: int
    assignment_id: int
    status: AgentStatus = AgentStatus.EXPIRED
    """The agent's status now: ``expired`` (runner lost), ``timeout`` or ``partner disconnect`` (no submit)."""


@dataclass(frozen=True)
class Endings:
    lost: list[Ended] = field(default_factory=list)
    """Agents of assignments whose runner died."""
    unsubmitted: list[Ended] = field(default_factory=list)
    """Agents that did not submit within the submission timeout."""
    expired_runs: frozenset[int] = frozenset()
    """Runs a unit of which expired (its slot is free for the next unit)."""
    restarts: list[Restart] = field(default_factory=list)
    """Assignments whose lost runner is to be started again (the caller sends each to a runner worker)."""


@dataclass(frozen=True)
class Restart:
    assignment_id: int
    claim: str
    agent_ids: tuple[str, ...]


@dataclass(frozen=True)
class _Seat:
    run_id: int
    agent_id: str
    status: AgentStatus
    started_long_ago: bool  # in its status since before the start's grace
    unit_id: int
    worker_id: int
    launch_id: str | None


def end_assignments(factory: sessionmaker[Session], client: redis.Redis, limiter: Limiter, *,
                    lease_s: float, now: datetime) -> Endings:
    """End the assignments whose runner's lease lapsed, and time out the agents that did not submit in
    time after their runner returned. Reads first: the write transaction is taken only when one is due."""
    cutoff = now - timedelta(seconds=lease_s * START_GRACE_LEASES)
    with read_transaction(factory) as session:
        runs = hosted_runs(session)
        seats: dict[int, list[_Seat]] = defaultdict(list)
        for run_id in runs:
            for row in session.execute(
                    select(Agent.assignment_id, Agent.id, Agent.status, (Agent.status_changed_at < cutoff).label("old"),
                           Agent.unit_id, Agent.worker_id, Unit.launch_id)
                    .join(Unit, Unit.id == Agent.unit_id)
                    .where(Agent.task_run_id == run_id, Agent.status.in_(_OPEN))):
                seats[int(row.assignment_id)].append(_Seat(run_id, str(row.id), AgentStatus(row.status),
                                                           bool(row.old), int(row.unit_id), int(row.worker_id),
                                                           row.launch_id))
    if not seats:
        return Endings()
    assignments = sorted(seats)
    probe = client.pipeline(transaction=False)
    for assignment_id in assignments:
        probe.get(keys.assignment_runner_lease(assignment_id))
    lost: list[int] = []
    overdue: list[int] = []
    values: dict[int, bytes | None] = {}
    for assignment_id, lease in zip(assignments, probe.execute(), strict=True):
        held = seats[assignment_id]
        values[assignment_id] = lease
        if lease is None or is_lost(lease):
            if any(s.status == AgentStatus.IN_TASK and s.started_long_ago for s in held):
                lost.append(assignment_id)
            continue
        returned = ended_at(lease)
        if returned is not None and submissions_overdue(returned, runs[held[0].run_id].submission_timeout_s, now):
            overdue.append(assignment_id)
    restarts: list[Restart] = []
    for assignment_id in list(lost):
        limit = runs[seats[assignment_id][0].run_id].runner_restarts
        if limit <= 0 or values[assignment_id] is not None:
            continue
        lost.remove(assignment_id)
        claim = claim_restart(client, assignment_id, lease_s=lease_s)
        if claim is None:
            continue  # another sweep restarts it
        if restart_number(claim) > limit:
            given_up = give_up_restart(client, assignment_id, claim)
            if given_up is not None:
                values[assignment_id] = given_up.encode()
                lost.append(assignment_id)
            continue
        restarts.append(Restart(assignment_id, claim, tuple(s.agent_id for s in seats[assignment_id]
                                                            if s.status == AgentStatus.IN_TASK)))
    # The key decides between the sweep and a runner that comes back (a paused process): one ended only
    # once claimed, so no runner touches it afterwards; one whose runner set its lease again runs on.
    lost = [a for a in lost if claim_end(client, a, values[a])]
    if not lost and not overdue:
        return Endings(restarts=restarts)
    releases: list[UnitTokens] = []
    with transaction(factory) as session:
        ended = [e for a in lost for e in _end_lost(session, a, seats[a], runs, releases, now)]
        unsubmitted = [e for a in overdue for e in _time_out(session, a, seats[a], runs, releases, now)]
    release_unit_tokens(limiter, releases)
    return Endings(ended, unsubmitted, frozenset(t.run_id for t in releases if t.status == UnitStatus.EXPIRED),
                   restarts)


def _end_lost(session: Session, assignment_id: int, seats: list[_Seat], runs: dict[int, HostedRun],
              releases: list[UnitTokens], now: datetime) -> list[Ended]:
    ended: list[Ended] = []
    for seat in seats:
        if seat.status != AgentStatus.IN_TASK:
            continue
        if not move_agent(session, seat.agent_id, AgentStatus.IN_TASK, AgentStatus.EXPIRED, now=now):
            continue  # submitted at this moment
        if move_unit(session, seat.unit_id, UnitStatus.ASSIGNED, UnitStatus.LAUNCHED, now=now,
                     agent_id=None, worker_id=None):
            releases.append(UnitTokens(seat.run_id, seat.unit_id, seat.launch_id, UnitStatus.LAUNCHED,
                                       seat.worker_id, runs[seat.run_id].task_name))
        ended.append(Ended(seat.agent_id, seat.unit_id, seat.run_id, assignment_id))
    return ended


def _time_out(session: Session, assignment_id: int, seats: list[_Seat], runs: dict[int, HostedRun],
              releases: list[UnitTokens], now: datetime) -> list[Ended]:
    units = int(session.scalar(select(func.count()).select_from(Unit)
                               .where(Unit.assignment_id == assignment_id)) or 0)
    ended: list[Ended] = []
    for seat in seats:
        run = runs[seat.run_id]
        status = seat.status
        if status == AgentStatus.IN_TASK:
            if not move_agent(session, seat.agent_id, AgentStatus.IN_TASK, AgentStatus.TIMEOUT, now=now):
                continue  # submitted at this moment
            status = AgentStatus.TIMEOUT
        back = unit_after_time_out(units, run.stopping)
        target = UnitStatus.LAUNCHED if back else UnitStatus.EXPIRED
        cleared = {"agent_id": None, "worker_id": None} if back else {}
        # Still this agent's: a partner-disconnect agent's submit at this moment completed it.
        if session.scalar(select(Unit.agent_id).where(Unit.id == seat.unit_id)) != seat.agent_id:
            continue
        if not move_unit(session, seat.unit_id, UnitStatus.ASSIGNED, target, now=now, **cleared):
            continue
        releases.append(UnitTokens(seat.run_id, seat.unit_id, seat.launch_id, target, seat.worker_id,
                                   run.task_name))
        ended.append(Ended(seat.agent_id, seat.unit_id, seat.run_id, assignment_id, status))
    return ended



def end_lost_onboardings(factory: sessionmaker[Session], client: redis.Redis, *, now: datetime) -> list[str]:
    """Expire the onboarding agents of hosted runs whose onboarding world a runner played (``L:onboarding:
    <id>:runner``) and whose runner's lease is gone (the runner died, or was paused past it): the sweep
    claims each lease key first (``lost``), so a runner that comes back touches nothing. Their pages are
    told ``expired`` by the caller; the worker starts again from scratch. Returns the agents expired."""
    with read_transaction(factory) as session:
        runs = list(hosted_runs(session))
        open_ids = [str(a) for a in session.scalars(select(OnboardingAgent.id).where(
            OnboardingAgent.task_run_id.in_(runs), OnboardingAgent.status.in_(_ONBOARDING_OPEN)))] if runs else []
    if not open_ids:
        return []
    probe = client.pipeline(transaction=False)
    for agent_id in open_ids:
        probe.exists(keys.onboarding_runner(agent_id))
        probe.get(keys.onboarding_runner_lease(agent_id))
    found = probe.execute()
    lost = [agent_id for agent_id, played, lease in zip(open_ids, found[::2], found[1::2], strict=True)
            if played and (lease is None or is_lost(lease))
            and claim_end(client, 0, lease, key=keys.onboarding_runner_lease(agent_id))]
    if not lost:
        return []
    with transaction(factory) as session:
        return [agent_id for agent_id in lost if move_onboarding_agent(
            session, agent_id, (AgentStatus.ONBOARDING, AgentStatus.WAITING), AgentStatus.EXPIRED, now=now)]


_ONBOARDING_OPEN = (AgentStatus.ONBOARDING.value, AgentStatus.WAITING.value)
