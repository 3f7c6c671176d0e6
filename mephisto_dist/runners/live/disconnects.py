"""Disconnecting agents whose live page fell silent, as Mephisto's router did after ``FAILED_PING_TIME``.

The agent moves ``in task`` -> ``disconnect`` (a late submission is refused, a returning page is told its
unit is gone) and its unit goes back to the pool (``assigned`` -> ``launched``) for another worker, or
expires when the run is shutting down. The unit keeps its run and deployment tokens while it is launched
(a launched unit counts against ``max_num_concurrent_units``, as before it was taken); the worker's own
tokens (``allowed_concurrent``, ``maximum_units_per_worker``) are given back, since the unit no longer
counts as theirs. Both moves are compare-and-sets, so a submission racing the sweep wins or loses whole.

An agent waiting for its partners (a hosted TaskRunner's assignment) is disconnected the same way: no work
was done, so its unit goes back to the pool (Mephisto's ``update_status``: "waiting agents' unit can be
reassigned"). An agent of a hosted assignment already ``in task`` leaves a conversation nobody can take up:
its unit expires, as Mephisto's ``execute_assignment`` expires the unit of the agent that left; its runner
hears it through the agent's inbox (``Disconnected.hosted``), and its partners become ``partner
disconnect`` there.

An onboarding agent whose page fell silent moves ``onboarding`` -> ``disconnect`` the same way (its late
answers are refused; the worker who comes back starts a fresh attempt). It holds no unit or tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, OnboardingAgent, Task, TaskRun, Unit
from mephisto_dist.db.transitions import move_agent, move_onboarding_agent, move_unit
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.limiter import Limiter
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens


@dataclass(frozen=True)
class Disconnected:
    agent_id: str
    unit_id: int | None  # None for an onboarding agent
    run_id: int
    expired: bool  # the run is stopping: the page is told its task expired
    hosted: bool = False  # an agent of a hosted assignment that had started: its runner must hear it
    freed_run_slot: bool = False  # its unit expired while the run goes on: a slot for the next unit


_LEAVING = (AgentStatus.IN_TASK.value, AgentStatus.WAITING.value)


def disconnect_agents(factory: sessionmaker[Session], limiter: Limiter, agent_ids: Sequence[str], *,
                      now: datetime) -> list[Disconnected]:
    """Disconnect those of ``agent_ids`` still in task or waiting for partners; return what moved."""
    if not agent_ids:
        return []
    done: list[Disconnected] = []
    releases: list[UnitTokens] = []
    with transaction(factory) as session:
        rows = session.execute(
            select(Agent.id, Agent.status, Agent.unit_id, Agent.task_run_id, Agent.worker_id,
                   TaskRun.shutdown_requested_at, Task.task_name, Unit.launch_id, TaskRun.config)
            .join(TaskRun, TaskRun.id == Agent.task_run_id).join(Task, Task.id == TaskRun.task_id)
            .join(Unit, Unit.id == Agent.unit_id)
            .where(Agent.id.in_(list(agent_ids)), Agent.status.in_(_LEAVING))).all()
        for agent_id, status, unit_id, run_id, worker_id, stopping_at, task_name, launch_id, config in rows:
            old = AgentStatus(status)
            if not move_agent(session, agent_id, old, AgentStatus.DISCONNECT, now=now):
                continue  # submitted (or started) at this moment
            stopping = stopping_at is not None
            hosted = old == AgentStatus.IN_TASK and RunConfig.parse(config).hosts_assignments
            if stopping or hosted:
                moved = move_unit(session, unit_id, UnitStatus.ASSIGNED, UnitStatus.EXPIRED, now=now)
            else:
                moved = move_unit(session, unit_id, UnitStatus.ASSIGNED, UnitStatus.LAUNCHED, now=now,
                                  agent_id=None, worker_id=None)
            if not moved:
                continue
            target = UnitStatus.EXPIRED if stopping or hosted else UnitStatus.LAUNCHED
            releases.append(UnitTokens(run_id, unit_id, launch_id, target, worker_id, task_name))
            done.append(Disconnected(agent_id, unit_id, run_id, expired=stopping, hosted=hosted,
                                     freed_run_slot=hosted and not stopping))
    release_unit_tokens(limiter, releases)
    return done


def disconnect_onboarding_agents(factory: sessionmaker[Session], agent_ids: Sequence[str], *,
                                 now: datetime) -> list[Disconnected]:
    """Disconnect those of ``agent_ids`` that are onboarding agents still in ``onboarding``."""
    if not agent_ids:
        return []
    done: list[Disconnected] = []
    with transaction(factory) as session:
        rows = session.execute(select(OnboardingAgent.id, OnboardingAgent.task_run_id).where(
            OnboardingAgent.id.in_(list(agent_ids)),
            OnboardingAgent.status == AgentStatus.ONBOARDING.value)).all()
        for agent_id, run_id in rows:
            if move_onboarding_agent(session, agent_id, AgentStatus.ONBOARDING, AgentStatus.DISCONNECT, now=now):
                done.append(Disconnected(agent_id, None, int(run_id), expired=False))
    return done
