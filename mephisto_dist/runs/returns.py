"""Units whose worker gave their HIT back on a marketplace (MTurk's return, or its own abandonment)
come back to the pool without waiting for the assignment duration to run out.

A worker who returns a HIT on MTurk tells MTurk, not us. When another worker then accepts the HIT, the
registration takes the unit over (``work.claims``); when nobody does, this sweep asks the provider which
HITs of assigned units no worker holds any more and hands those units back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Task, TaskRun, Unit
from mephisto_dist.db.transitions import move_agent, move_unit
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.limiter import Limiter
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens
from mephisto_dist.providers import CrowdProvider

MIN_HELD_S = 30.0
"""A unit assigned more recently is not asked about: its worker has only just accepted."""


@runtime_checkable
class ReportsHolds(Protocol):
    def hits_not_held(self, hit_ids: Sequence[str]) -> list[str]:
        """Of these HITs, those no worker holds an assignment of and none submitted one."""
        ...


def open_hit_runs(session: Session, provider_types: Sequence[str]) -> list[int]:
    return list(session.scalars(select(TaskRun.id).where(
        TaskRun.is_completed.is_(False), TaskRun.provider_type.in_(list(provider_types)))))


def hand_back_returned_units(factory: sessionmaker[Session], provider: CrowdProvider, limiter: Limiter,
                             run_id: int, *, now: datetime, min_held_s: float = MIN_HELD_S) -> int:
    """Move the run's assigned units whose HIT nobody holds back to ``launched`` (their agent
    ``returned``); the number handed back. The provider is asked outside any transaction."""
    if not isinstance(provider, ReportsHolds):
        return 0
    with transaction(factory) as session:
        rows = session.execute(select(Unit.id, Unit.agent_id, Unit.worker_id, Unit.provider_unit_id, Unit.launch_id,
                                      Task.task_name)
                               .join(TaskRun, TaskRun.id == Unit.task_run_id).join(Task, Task.id == TaskRun.task_id)
                               .where(Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value,
                                      Unit.assigned_at <= now - timedelta(seconds=min_held_s),
                                      Unit.provider_unit_id.is_not(None))).all()
    if not rows:
        return 0
    gone = set(provider.hits_not_held([str(row.provider_unit_id) for row in rows]))
    return _move_back(factory, limiter, run_id, [row for row in rows if row.provider_unit_id in gone], now=now)


def hand_back_units_of_agents(factory: sessionmaker[Session], limiter: Limiter, run_id: int, agent_ids: Sequence[str],
                              *, now: datetime) -> int:
    """Move the run's assigned units these agents hold back to ``launched`` (their agent ``returned``): the
    provider says their worker gave up (a Prolific submission returned or timed out). The number moved."""
    if not agent_ids:
        return 0
    with transaction(factory) as session:
        rows = session.execute(select(Unit.id, Unit.agent_id, Unit.worker_id, Unit.launch_id, Task.task_name)
                               .join(TaskRun, TaskRun.id == Unit.task_run_id).join(Task, Task.id == TaskRun.task_id)
                               .where(Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value,
                                      Unit.agent_id.in_(list(agent_ids)))).all()
    return _move_back(factory, limiter, run_id, rows, now=now)


def _move_back(factory: sessionmaker[Session], limiter: Limiter, run_id: int, rows: Sequence[Any], *,
               now: datetime) -> int:
    moved: list[UnitTokens] = []
    with transaction(factory) as session:
        for row in rows:
            if row.agent_id is None:
                continue
            # Compare-and-set from what we read: a submit that arrived meanwhile wins.
            if move_agent(session, row.agent_id, AgentStatus.IN_TASK, AgentStatus.RETURNED, now=now) and \
                    move_unit(session, row.id, UnitStatus.ASSIGNED, UnitStatus.LAUNCHED, now=now, agent_id=None,
                              worker_id=None):
                # Handed back, the unit still counts against the run's cap; its worker's tokens are free.
                moved.append(UnitTokens(run_id, row.id, row.launch_id, UnitStatus.LAUNCHED, row.worker_id,
                                        row.task_name))
    release_unit_tokens(limiter, moved)
    return len(moved)
