"""Agents waiting for partners (``waiting``, a hosted TaskRunner's assignment) that waited longer than their
run's ``mephisto.task.partner_wait_in_seconds``: released by the live sweep. The agent ``waiting ->
expired`` (its page is told the task is no longer available, Mephisto's text for ``expired``), its unit
back to the pool (``assigned -> launched``: no work was done, as Mephisto reassigns a waiting agent's unit),
or expired when the run is stopping. The unit keeps its run slot; the worker's tokens are given back.
Both moves are compare-and-sets: a start of the assignment racing the sweep wins or loses whole (the
runner then finds the agent no longer waiting and starts nothing).

Only open runs whose script hosts its assignments are looked at, agents of one run at a time (the agent
table's ``(task_run_id, ...)`` index), so the sweep costs nothing for runs without a hosted runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, Task, TaskRun, Unit
from mephisto_dist.db.transitions import move_agent, move_unit
from mephisto_dist.domain.assignments import partner_wait_cutoff
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.limiter import Limiter
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens


@dataclass(frozen=True)
class Released:
    agent_id: str
    unit_id: int
    run_id: int


@dataclass(frozen=True)
class HostedRun:
    task_name: str
    partner_wait_s: int  # 0: as long as the page stays
    stopping: bool
    submission_timeout_s: int = 600
    runner_restarts: int = 0


_HOSTED: dict[int, tuple[bool, int, int, int]] = {}
"""Per run: whether its script hosts its assignments, its partner wait, its submission timeout and its
runner restarts (a run's config never changes)."""


def hosted_runs(session: Session) -> dict[int, HostedRun]:
    """The open runs whose assignments a runner worker hosts, by id."""
    found: dict[int, HostedRun] = {}
    for run_id, config, stopping_at, task_name in session.execute(
            select(TaskRun.id, TaskRun.config, TaskRun.shutdown_requested_at, Task.task_name)
            .join(Task, Task.id == TaskRun.task_id).where(TaskRun.is_completed.is_(False))):
        known = _HOSTED.get(run_id)
        if known is None:
            parsed = RunConfig.parse(config)
            known = _HOSTED[run_id] = (parsed.hosts_assignments, parsed.task.partner_wait_s,
                                       parsed.task.submission_timeout_s, parsed.task.runner_restarts)
        if known[0]:
            found[int(run_id)] = HostedRun(str(task_name), known[1], stopping_at is not None, known[2], known[3])
    return found


def release_overdue_waiting(factory: sessionmaker[Session], limiter: Limiter, *, now: datetime) -> list[Released]:
    """Release the agents that waited for partners past their run's wait; return them. Reads first: the
    write transaction (SQLite's write lock) is taken only when some agent is overdue."""
    with read_transaction(factory) as session:
        runs = [(run_id, cutoff, run.stopping, run.task_name) for run_id, run in hosted_runs(session).items()
                if (cutoff := partner_wait_cutoff(now, run.partner_wait_s)) is not None]
        overdue = [(run, row) for run in runs for row in session.execute(
            select(Agent.id, Agent.unit_id, Agent.worker_id, Unit.launch_id)
            .join(Unit, Unit.id == Agent.unit_id)
            .where(Agent.task_run_id == run[0], Agent.status == AgentStatus.WAITING.value,
                   Agent.status_changed_at < run[1]))]
    if not overdue:
        return []
    released: list[Released] = []
    releases: list[UnitTokens] = []
    with transaction(factory) as session:
        for (run_id, _, stopping, task_name), (agent_id, unit_id, worker_id, launch_id) in overdue:
            if not move_agent(session, agent_id, AgentStatus.WAITING, AgentStatus.EXPIRED, now=now):
                continue  # its assignment started at this moment, or its page went silent
            target = UnitStatus.EXPIRED if stopping else UnitStatus.LAUNCHED
            back = {} if stopping else {"agent_id": None, "worker_id": None}
            if move_unit(session, unit_id, UnitStatus.ASSIGNED, target, now=now, **back):
                releases.append(UnitTokens(run_id, unit_id, launch_id, target, worker_id, task_name))
            released.append(Released(str(agent_id), int(unit_id), run_id))
    release_unit_tokens(limiter, releases)
    return released
