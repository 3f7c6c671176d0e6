"""Reconcilers fired by beat (see ``beat.schedule``). Each is safe to run twice at once: it recomputes
from the database, the source of truth, and writes idempotently."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist import lifecycle
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Task, TaskRun, Unit
from mephisto_dist.domain.status import UNIT_SUBMITTED, UnitStatus
from mephisto_dist.limiter import Limiter, keys
from mephisto_dist.providers import CrowdProvider
from mephisto_dist.runs import GLOBAL_POOL, mark_completed_if_done, pool_members, run_pool, unit_holder


def _open_run_ids(session: Session) -> list[int]:
    return list(session.scalars(select(TaskRun.id).where(TaskRun.is_completed.is_(False))))


def reconcile_pools(factory: sessionmaker[Session], limiter: Limiter, *, lease_s: float) -> dict[str, int]:
    """Renew every token whose unit is launched or assigned, drop tokens of units that are done, and
    rebuild pools lost to a Redis restart. A token taken for a unit still ``created`` is a launch in
    flight: it is kept (the next launch of the run reuses it if its launcher died)."""
    counts: dict[str, int] = {}
    with read_transaction(factory) as session:
        run_ids = _open_run_ids(session)
        # Each pool's holders are read before the database: a launch that takes a token after that is
        # not in the recount, and must keep its token (reconcile drops only holders seen here).
        seen = {pool: limiter.holders(pool) for pool in [*map(run_pool, run_ids), GLOBAL_POOL]}
        wanted = {run_pool(run_id): pool_members(session, [run_id], seen[run_pool(run_id)]) for run_id in run_ids}
        wanted[GLOBAL_POOL] = pool_members(session, run_ids, seen[GLOBAL_POOL])
    for pool, members in wanted.items():
        counts[pool] = limiter.reconcile(pool, members, lease_s, seen=seen[pool])
    counts.update(_reconcile_worker_pools(factory, limiter, run_ids, lease_s=lease_s))
    return counts


def _reconcile_worker_pools(
    factory: sessionmaker[Session], limiter: Limiter, run_ids: list[int], *, lease_s: float
) -> dict[str, int]:
    """``allowed_concurrent``: renew each worker's tokens for the units they hold assigned (a worker
    with none has tokens that simply run out). ``maximum_units_per_worker``: rebuild each worker's
    count from their assigned and submitted units in every run of the task."""
    counts: dict[str, int] = {}
    held = [UnitStatus.ASSIGNED.value] + [s.value for s in UNIT_SUBMITTED]
    with transaction(factory) as session:
        runs = session.execute(
            select(TaskRun.id, TaskRun.task_id, TaskRun.config, Task.task_name)
            .join(Task, Task.id == TaskRun.task_id).where(TaskRun.id.in_(run_ids))
        ).all()
        assigned: dict[str, set[str]] = defaultdict(set)
        totals: dict[str, set[str]] = defaultdict(set)
        seen_tasks: set[int] = set()
        for run_id, task_id, config, task_name in runs:
            task_args = config.get("task", {})
            if int(task_args.get("allowed_concurrent") or 0):
                for unit_id, worker_id in session.execute(select(Unit.id, Unit.worker_id).where(
                        Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value,
                        Unit.worker_id.is_not(None))):
                    assigned[keys.worker_assigned_pool(run_id, worker_id or 0)].add(unit_holder(unit_id))
            if int(task_args.get("maximum_units_per_worker") or 0) and task_id not in seen_tasks:
                seen_tasks.add(task_id)
                for unit_id, worker_id in session.execute(
                        select(Unit.id, Unit.worker_id).join(TaskRun, TaskRun.id == Unit.task_run_id)
                        .where(TaskRun.task_id == task_id, Unit.status.in_(held),
                               Unit.worker_id.is_not(None))):
                    totals[keys.worker_task_units_pool(task_name, worker_id or 0)].add(unit_holder(unit_id))
    for pool, holders in assigned.items():
        counts[pool] = limiter.reconcile(pool, holders, lease_s)
    for pool, holders in totals.items():
        counts[pool] = limiter.reconcile(pool, holders, None)
    return counts


def reconcile_runs(
    factory: sessionmaker[Session], limiter: Limiter, provider_for: Callable[[TaskRun], CrowdProvider], *,
    now: datetime,
) -> list[int]:
    """Sweep every open run: time out overdue units, shut down runs past their lifetime or patience,
    close runs whose units are all done; return the runs that still have units to launch."""
    to_launch: list[int] = []
    with transaction(factory) as session:
        run_ids = _open_run_ids(session)
    for run_id in run_ids:
        lifecycle.time_out_overdue_units(factory, limiter, run_id, now=now)
        lifecycle.time_out_abandoned_onboarding(factory, run_id, now=now)
        with transaction(factory) as session:
            run = session.get(TaskRun, run_id)
            if run is None:
                continue
            reason = None
            if run.shutdown_requested_at is None:
                reason = lifecycle.stop_reason(lifecycle.RunTiming.of(run), created_at=run.created_at,
                                               last_activity_at=lifecycle.last_activity(session, run), now=now)
                if reason is not None:
                    lifecycle.request_shutdown(session, run_id, reason, now=now)
            stopping = reason is not None or run.shutdown_requested_at is not None
        if stopping:
            # Idempotent: also finishes an expiry step whose process died half-way.
            lifecycle.expire_available_units(factory, provider_for(run), limiter, run_id, now=now)
        with transaction(factory) as session:
            if mark_completed_if_done(session, run_id, now=now) or stopping:
                continue
            waiting = session.scalar(select(Unit.id).where(
                Unit.task_run_id == run_id, Unit.status == UnitStatus.CREATED.value).limit(1))
            if waiting is not None:
                to_launch.append(run_id)
    return to_launch
