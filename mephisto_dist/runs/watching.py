"""What ``mephisto-dist run`` and ``resume`` read while they hold a run attached: whether a run can be
resumed, the newest open run of a task, the run's progress each poll, and its summary at the end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.architects import ServerPlan, plan_server
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, Task, TaskRun
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.errors import NotAllowed, NotFoundError
from mephisto_dist.runs.task_runs import mark_completed_if_done, unit_counts


@dataclass(frozen=True)
class Resumable:
    task_name: str
    architect_type: str
    server: ServerPlan


def resumable(sessions: sessionmaker[Session], run_id: int) -> Resumable:
    """A run whose processes died and that may go on: not complete and not stopped."""
    with read_transaction(sessions) as session:
        stored = session.get(TaskRun, run_id)
        if stored is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        if stored.is_completed:
            raise NotAllowed(f"task run {run_id} is already complete; nothing to resume")
        if stored.shutdown_requested_at is not None:
            raise NotAllowed(f"task run {run_id} was stopped ({stored.shutdown_reason}); start a new run instead")
        task_name = session.scalar(select(Task.task_name).where(Task.id == stored.task_id)) or ""
        server = plan_server(stored.architect_type, RunConfig.parse(stored.config).architect.args)
        return Resumable(task_name, stored.architect_type, server)


def incomplete_run(sessions: sessionmaker[Session], task_name: str) -> int | None:
    """The newest run of ``task_name`` that is neither complete nor stopped."""
    with read_transaction(sessions) as session:
        found = session.scalar(
            select(TaskRun.id).join(Task, Task.id == TaskRun.task_id)
            .where(Task.task_name == task_name, TaskRun.is_completed.is_(False),
                   TaskRun.shutdown_requested_at.is_(None))
            .order_by(TaskRun.id.desc()).limit(1))
    return None if found is None else int(found)


@dataclass(frozen=True)
class Progress:
    counts: dict[UnitStatus, int]
    stopping: bool
    """A stop was requested (by ``mephisto-dist shutdown``, Ctrl-C or a beat sweep)."""
    stop_reason: str | None
    closed: bool


def progress(sessions: sessionmaker[Session], run_id: int) -> Progress:
    with read_transaction(sessions) as session:
        stored = session.get(TaskRun, run_id)
        if stored is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        return Progress(unit_counts(session, run_id), stored.shutdown_requested_at is not None,
                        stored.shutdown_reason, stored.is_completed)


def close_if_done(sessions: sessionmaker[Session], run_id: int, *, now: datetime) -> bool:
    """Mark the run completed when every unit is done (beat would, but it stops with the command)."""
    with transaction(sessions) as session:
        return mark_completed_if_done(session, run_id, now=now)


@dataclass(frozen=True)
class Summary:
    completed: int
    expired: int
    returned: int
    """Agents that returned, disconnected or timed out."""


def summary(sessions: sessionmaker[Session], run_id: int) -> Summary:
    with read_transaction(sessions) as session:
        counts = unit_counts(session, run_id)
        agents = {status: int(n) for status, n in session.execute(
            select(Agent.status, func.count()).where(Agent.task_run_id == run_id).group_by(Agent.status))}
    returned = sum(agents.get(s.value, 0) for s in (AgentStatus.RETURNED, AgentStatus.DISCONNECT,
                                                    AgentStatus.TIMEOUT))
    return Summary(counts.get(UnitStatus.COMPLETED, 0), counts.get(UnitStatus.EXPIRED, 0), returned)
