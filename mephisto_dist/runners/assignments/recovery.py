"""Assignments whose runner died (the runner worker SIGKILLed, its machine lost): agents ``in task`` of a
hosted run, started more than a grace ago, whose assignment's lease (:mod:`.lease`) is gone. The live sweep
ends each such assignment in one transaction: its agents ``in task -> expired`` (their pages are told the
task is no longer available), its units ``assigned -> launched`` (back to the pool for new workers: the
units keep their run slots, the workers' tokens are given back). What the agents said stays in
``agent_message``; nothing is paid for it (payments follow completed units, and each relaunched unit is
completed, and paid, once). ``cleanup_assignment`` is not called: the runner died with its process.

The runner is not restarted from the stored messages (stage 2 of the design's replay is not done).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, Unit
from mephisto_dist.db.transitions import move_agent, move_unit
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.limiter import Limiter, keys
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens
from mephisto_dist.runners.assignments.waiting import hosted_runs

START_GRACE_LEASES = 2
"""A start is given this many lease times to take its lease before the sweep looks for it."""


@dataclass(frozen=True)
class Ended:
    agent_id: str
    unit_id: int
    run_id: int
    assignment_id: int


def end_lost_assignments(factory: sessionmaker[Session], client: redis.Redis, limiter: Limiter, *,
                         lease_s: float, now: datetime) -> list[Ended]:
    """End the assignments whose runner's lease lapsed; return their agents that ended."""
    cutoff = now - timedelta(seconds=lease_s * START_GRACE_LEASES)
    with read_transaction(factory) as session:
        runs = hosted_runs(session)
        rows = [(run_id, row) for run_id in runs for row in session.execute(
            select(Agent.assignment_id, Agent.id, Agent.unit_id, Agent.worker_id, Unit.launch_id)
            .join(Unit, Unit.id == Agent.unit_id)
            .where(Agent.task_run_id == run_id, Agent.status == AgentStatus.IN_TASK.value,
                   Agent.status_changed_at < cutoff))]
    if not rows:
        return []
    by_assignment: dict[int, list[tuple[int, tuple[str, int, int, str | None]]]] = defaultdict(list)
    for run_id, (assignment_id, agent_id, unit_id, worker_id, launch_id) in rows:
        by_assignment[int(assignment_id)].append((run_id, (str(agent_id), int(unit_id), int(worker_id), launch_id)))
    assignments = sorted(by_assignment)
    probe = client.pipeline(transaction=False)
    for assignment_id in assignments:
        probe.exists(keys.assignment_runner_lease(assignment_id))
    lost = [a for a, held in zip(assignments, probe.execute(), strict=True) if not held]
    if not lost:
        return []
    ended: list[Ended] = []
    releases: list[UnitTokens] = []
    with transaction(factory) as session:
        for assignment_id in lost:
            for run_id, (agent_id, unit_id, worker_id, launch_id) in by_assignment[assignment_id]:
                if not move_agent(session, agent_id, AgentStatus.IN_TASK, AgentStatus.EXPIRED, now=now):
                    continue  # submitted at this moment
                if move_unit(session, unit_id, UnitStatus.ASSIGNED, UnitStatus.LAUNCHED, now=now,
                             agent_id=None, worker_id=None):
                    releases.append(UnitTokens(run_id, unit_id, launch_id, UnitStatus.LAUNCHED, worker_id,
                                               runs[run_id].task_name))
                ended.append(Ended(agent_id, unit_id, run_id, assignment_id))
    release_unit_tokens(limiter, releases)
    return ended

