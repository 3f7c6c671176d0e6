"""Partners: a claim on a run whose assignments run their agents together (a task script's concurrent
TaskRunner, ``TaskHooks.hosts_assignments``). The agent waits (``waiting``) until every unit of its
assignment is claimed; the claim that completes it writes an ``assignment_ready`` outbox message in the
same transaction, sent after the commit, which starts the assignment's runner on a runner worker.

Claims of one assignment are serialised on the assignment: a row lock on PostgreSQL (taken after the
claim's own writes, so the count that follows sees every claim committed before it), SQLite's write lock.
Two claims never both see the assignment incomplete: the later one waits for the earlier's commit.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mephisto_dist.compat.data_model import Unit as UnitView
from mephisto_dist.compat.data_model import Worker
from mephisto_dist.compat.live_agent import Agent as LiveAgent
from mephisto_dist.compat.live_agent import NoChannel
from mephisto_dist.compat.task_runner import TaskRunner, build_runner
from mephisto_dist.db import outbox
from mephisto_dist.db.models import Agent, Assignment, Unit
from mephisto_dist.domain.assignments import ready_to_start
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.errors import RequestError
from mephisto_dist.work.claims import AgentDetails, RunContext

log = logging.getLogger(__name__)


def record_claim(session: Session, run_id: int, unit_id: int, *, now: datetime) -> int | None:
    """After a claim of ``unit_id``: the ``assignment_ready`` message when that claim completed its
    assignment (its id, to send after the commit), else None."""
    assignment_id = int(session.scalar(select(Unit.assignment_id).where(Unit.id == unit_id)) or 0)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Assignment.id).where(Assignment.id == assignment_id).with_for_update())
    units = int(session.scalar(select(func.count()).select_from(Unit)
                               .where(Unit.assignment_id == assignment_id)) or 0)
    waiting = [str(agent_id) for agent_id in session.scalars(
        select(Agent.id).join(Unit, Unit.agent_id == Agent.id)
        .where(Unit.assignment_id == assignment_id, Unit.status == UnitStatus.ASSIGNED.value,
               Agent.status == AgentStatus.WAITING.value)
        .order_by(Unit.unit_index, Unit.id))]
    if not ready_to_start(units, len(waiting)):
        return None
    # One message per set of agents: if one of them leaves before the start, a later claim makes another.
    digest = hashlib.sha1(",".join(waiting).encode()).hexdigest()[:16]
    return outbox.add(session, outbox.ASSIGNMENT_READY, f"{assignment_id}:{digest}", run_id=run_id,
                      payload={"assignment_id": assignment_id, "agent_ids": waiting}, now=now)


_RUNNERS: dict[int, Any] = {}


def init_task_data(run: RunContext, details: AgentDetails) -> dict[str, Any] | None:
    """The script's ``get_init_data_for_agent(agent)`` for a new agent, as Mephisto calls it at the claim;
    None when the runner leaves it to the blueprint (it does not define the method)."""
    runner_class = run.hooks.task_runner
    if runner_class is None or runner_class.get_init_data_for_agent is TaskRunner.get_init_data_for_agent:
        return None
    runner = _RUNNERS.get(run.run_id)
    if runner is None:
        runner = _RUNNERS[run.run_id] = build_runner(
            runner_class, run.run_id, run.run_config.blueprint.blueprint_type, run.config, run.hooks.shared_state)
    unit = UnitView(details.unit_id, 0, dict(details.init_task_data or {}), UnitStatus.ASSIGNED.value)
    agent = LiveAgent(str(details.agent_id), Worker(""), unit, NoChannel())
    try:
        data = runner.get_init_data_for_agent(agent)
    except Exception as error:
        log.exception("the task's get_init_data_for_agent failed")
        raise RequestError(f"the task's get_init_data_for_agent failed: {type(error).__name__}: {error}",
                           500) from None
    return data if isinstance(data, dict) else {"task_data": data}
