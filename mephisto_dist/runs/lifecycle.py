"""Stopping, expiring and timing out: what Ctrl-C, ``shutdown``, ``resume`` and the beat sweeps do to a
run. Everything is driven by database state and ``now``, so it works from any machine and happens even
when the process that launched the run is gone. Every step is idempotent: re-running a step that was
killed half-way finishes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, OnboardingAgent, Task, TaskRun, Unit
from mephisto_dist.db.transitions import move_agent, move_onboarding_agent, move_units
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.errors import NotFoundError, ServiceError
from mephisto_dist.limiter import Limiter
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens
from mephisto_dist.providers import CrowdProvider, UnitLaunch
from mephisto_dist.runs.task_runs import mark_completed_if_done

log = logging.getLogger(__name__)

REASON_CTRL_C = "stopped by the researcher (Ctrl-C)"
REASON_SHUTDOWN = "stopped by the researcher (mephisto-dist shutdown)"
REASON_FORCED = "force-stopped by the researcher"
REASON_FAILED_START = "failed to start"
REASON_LIFETIME = "task_lifetime_in_seconds ({s} s) ran out"
REASON_PATIENCE = "no submission for no_submission_patience ({s} s)"


@dataclass(frozen=True)
class RunTiming:
    """A run's timing arguments (``mephisto.task``), read from its stored config."""

    assignment_duration_s: int
    task_lifetime_s: int
    no_submission_patience_s: int

    @classmethod
    def of(cls, run: TaskRun) -> RunTiming:
        task = RunConfig.parse(run.config).task
        return cls(task.assignment_duration_s, task.task_lifetime_s, task.no_submission_patience_s)


def stop_reason(timing: RunTiming, *, created_at: datetime, last_activity_at: datetime,
                now: datetime) -> str | None:
    """Why a run should shut itself down now, if it should (pure)."""
    if now - created_at >= timedelta(seconds=timing.task_lifetime_s):
        return REASON_LIFETIME.format(s=timing.task_lifetime_s)
    if now - last_activity_at >= timedelta(seconds=timing.no_submission_patience_s):
        return REASON_PATIENCE.format(s=timing.no_submission_patience_s)
    return None


def request_shutdown(session: Session, run_id: int, reason: str, *, now: datetime) -> bool:
    """Stop launching: True only for the call that made the request."""
    if session.get(TaskRun, run_id) is None:
        raise NotFoundError(f"task run {run_id} does not exist")
    result = session.execute(
        update(TaskRun).where(TaskRun.id == run_id, TaskRun.shutdown_requested_at.is_(None))
        .values(shutdown_requested_at=now, shutdown_reason=reason)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def expire_available_units(
    factory: sessionmaker[Session], provider: CrowdProvider, limiter: Limiter, run_id: int, *, now: datetime
) -> int:
    """Take every launched-but-unassigned unit off the provider and expire it, and expire units never
    launched. Unpublishing comes first: a unit a worker can still see must not be marked expired."""
    with transaction(factory) as session:
        rows = session.execute(select(Unit.id, Unit.provider_unit_id, Unit.launch_id).where(
            Unit.task_run_id == run_id, Unit.status == UnitStatus.LAUNCHED.value)).all()
    provider.unpublish_units([p for _, p, _ in rows if p])
    with transaction(factory) as session:
        expired = move_units(session, [u for u, _, _ in rows], UnitStatus.LAUNCHED, UnitStatus.EXPIRED, now=now)
        never = session.execute(select(Unit.id, Unit.launch_id).where(
            Unit.task_run_id == run_id, Unit.status == UnitStatus.CREATED.value)).all()
        expired_never = move_units(session, [u for u, _ in never], UnitStatus.CREATED, UnitStatus.EXPIRED, now=now)
    # A launch in flight whose sender died may have published: take down what it did.
    in_flight = [UnitLaunch(run_id, u, launch) for u, launch in never if launch and u in expired_never]
    if in_flight:
        provider.unpublish_launches(in_flight)
    launches = {u: launch for u, _, launch in rows} | {u: launch for u, launch in never}
    _release(limiter, run_id, [UnitTokens(run_id, u, launches.get(u), UnitStatus.EXPIRED)
                               for u in expired + expired_never])
    return len(expired) + len(expired_never)


def force_expire(
    factory: sessionmaker[Session], provider: CrowdProvider, limiter: Limiter, run_id: int, *, now: datetime
) -> int:
    """Disconnect every active agent and expire every unit not yet submitted. Work submitted before
    this moment is kept."""
    count = expire_available_units(factory, provider, limiter, run_id, now=now)
    with transaction(factory) as session:
        rows = session.execute(select(Unit.id, Unit.agent_id, Unit.worker_id, Unit.launch_id).where(
            Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value)).all()
        task_name = _task_name(session, run_id)
        held_hits = list(session.scalars(select(Unit.provider_unit_id).where(
            Unit.id.in_([u for u, _, _, _ in rows]), Unit.provider_unit_id.is_not(None))))
    # Expired here, the units' HITs must not be handed to another worker after the holder returns them.
    provider.unpublish_units([hit for hit in held_hits if hit])
    with transaction(factory) as session:
        expired = move_units(session, [u for u, _, _, _ in rows], UnitStatus.ASSIGNED, UnitStatus.EXPIRED,
                             now=now)
        for unit_id, agent_id, _, _ in rows:
            if unit_id in expired and agent_id:
                move_agent(session, agent_id, AgentStatus.IN_TASK, AgentStatus.DISCONNECT, now=now)
        mark_completed_if_done(session, run_id, now=now)
    _release(limiter, run_id, [UnitTokens(run_id, u, launch, UnitStatus.EXPIRED, w, task_name)
                               for u, _, w, launch in rows if u in expired])
    return count + len(expired)


def _task_name(session: Session, run_id: int) -> str:
    return str(session.execute(select(Task.task_name).join(TaskRun, TaskRun.task_id == Task.id)
                               .where(TaskRun.id == run_id)).scalar_one())


def _release(limiter: Limiter, run_id: int, units: Sequence[UnitTokens]) -> None:
    """Give back the tokens of units the database no longer counts (after the commit that moved them).
    Redis being gone (a run whose processes all died, its embedded Redis with them) is no failure of the
    step that was done: the pools are rebuilt from the database, and beat removes the tokens of done
    units."""
    try:
        release_unit_tokens(limiter, units)
    except ServiceError as error:
        log.info("task run %s: tokens not given back now (%s); the pools' repair will", run_id, error)


def time_out_overdue_units(factory: sessionmaker[Session], limiter: Limiter, run_id: int, *,
                           now: datetime) -> int:
    """Units assigned longer than ``assignment_duration_in_seconds``: the agent times out (a late
    submission is refused) and the unit goes back to the pool for another worker, or expires when the
    run is shutting down."""
    with transaction(factory) as session:
        run = session.get(TaskRun, run_id)
        if run is None:
            return 0
        cutoff = now - timedelta(seconds=RunTiming.of(run).assignment_duration_s)
        stopping = run.shutdown_requested_at is not None
        task_name = _task_name(session, run_id)
        rows = session.execute(select(Unit.id, Unit.agent_id, Unit.worker_id, Unit.launch_id).where(
            Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value,
            Unit.assigned_at < cutoff)).all()
        moved: list[UnitTokens] = []
        target = UnitStatus.EXPIRED if stopping else UnitStatus.LAUNCHED
        extra = {} if stopping else {"agent_id": None, "worker_id": None}
        for unit_id, agent_id, worker_id, launch_id in rows:
            if agent_id is None or not move_agent(session, agent_id, AgentStatus.IN_TASK, AgentStatus.TIMEOUT,
                                                  now=now):
                continue  # submitted (or handled) just now
            if move_units(session, [unit_id], UnitStatus.ASSIGNED, target, now=now, **extra):
                moved.append(UnitTokens(run_id, unit_id, launch_id, target, worker_id, task_name))
    _release(limiter, run_id, moved)
    return len(moved)


def time_out_abandoned_onboarding(factory: sessionmaker[Session], run_id: int, *, now: datetime) -> int:
    """Onboarding agents left in ``onboarding`` longer than the run's assignment duration time out: the
    worker who comes back starts a fresh attempt instead of a stale one."""
    with transaction(factory) as session:
        run = session.get(TaskRun, run_id)
        if run is None:
            return 0
        cutoff = now - timedelta(seconds=RunTiming.of(run).assignment_duration_s)
        stale = list(session.scalars(select(OnboardingAgent.id).where(
            OnboardingAgent.task_run_id == run_id, OnboardingAgent.status == AgentStatus.ONBOARDING.value,
            OnboardingAgent.created_at < cutoff)))
        return sum(move_onboarding_agent(session, agent_id, AgentStatus.ONBOARDING, AgentStatus.TIMEOUT, now=now)
                   for agent_id in stale)


def last_activity(session: Session, run: TaskRun) -> datetime:
    """The newest submission of the run, or its creation when nothing was submitted yet."""
    newest = session.scalar(select(func.max(Agent.submitted_at)).where(Agent.task_run_id == run.id))
    return newest or run.created_at


def in_flight(session: Session, run_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Unit).where(
        Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value)) or 0)
