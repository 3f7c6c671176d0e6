"""Reconcilers fired by beat (see ``mephisto_dist.celery.schedule``). Each is safe to run twice at once: it recomputes
from the database, the source of truth, and writes idempotently."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, Task, TaskRun, Unit
from mephisto_dist.domain.status import UNIT_DONE, UNIT_SUBMITTED, UnitStatus
from mephisto_dist.limiter import Limiter, keys
from mephisto_dist.limiter.units import token_holder, unit_holder
from mephisto_dist.providers import CrowdProvider
from mephisto_dist.runs import lifecycle
from mephisto_dist.runs.launches import GLOBAL_POOL, pool_members, run_pool, say_if_lost
from mephisto_dist.runs.task_runs import mark_completed_if_done


def _open_run_ids(session: Session) -> list[int]:
    return list(session.scalars(select(TaskRun.id).where(TaskRun.is_completed.is_(False))))


def reconcile_pools(factory: sessionmaker[Session], limiter: Limiter, *, lease_s: float,
                    global_cap: int = 0) -> dict[str, int]:
    """Rebuild the pools Redis lost, renew every token whose unit still counts (launched, assigned, or a
    launch in flight), and remove the tokens of units that are done.

    A rebuild that put tokens back is logged as a loss. Without a deployment cap (``global_cap`` 0) the
    deployment's pool is only a figure this keeps for ``status`` and the metrics: no launch takes a
    token there, so its first build on a deployment already running units is no loss.

    The pools' holders are read before the database: a token taken after that snapshot (its launch not
    yet recorded) is neither renewed nor removed, so this can never free a slot someone just took; a
    token whose launch never gets recorded runs out with its lease.
    """
    counts: dict[str, int] = {}
    with read_transaction(factory) as session:
        runs = session.execute(select(TaskRun.id, TaskRun.max_concurrent_units)
                               .where(TaskRun.is_completed.is_(False))).all()
    run_ids = [run_id for run_id, _ in runs]
    capped = [run_id for run_id, cap in runs if cap or limiter.get_cap(run_pool(run_id))]
    pools: dict[str, list[int] | None] = {run_pool(run_id): [run_id] for run_id in capped}
    pools[GLOBAL_POOL] = None
    seen = {pool: limiter.holders(pool) for pool in pools}
    with read_transaction(factory) as session:
        counting = {pool: pool_members(session, ids) for pool, ids in pools.items()}
        done = _done_holders(session, set().union(*seen.values()))
    for pool, members in counting.items():
        rebuilt = limiter.rebuild(pool, members, lease_s)
        if pool != GLOBAL_POOL or global_cap:
            say_if_lost(pool, rebuilt)
        counts[pool] = rebuilt if rebuilt is not None else limiter.refresh(pool, members, seen[pool] & done, lease_s)
    counts.update(_reconcile_worker_pools(factory, limiter, run_ids, lease_s=lease_s))
    return counts


def _done_holders(session: Session, holders: set[str]) -> set[str]:
    """Of these token holders, those whose unit is done: provably gone."""
    launch_ids = [h.removeprefix("launch:") for h in holders if h.startswith("launch:")]
    unit_ids = [int(h.removeprefix("unit:")) for h in holders if h.startswith("unit:") and h[5:].isdigit()]
    done: set[str] = set()
    for chunk in range(0, len(launch_ids), 500):
        done |= {token_holder(u, launch) for u, launch in session.execute(select(Unit.id, Unit.launch_id).where(
            Unit.launch_id.in_(launch_ids[chunk:chunk + 500]), Unit.status.in_([s.value for s in UNIT_DONE])))}
    for chunk in range(0, len(unit_ids), 500):
        done |= {unit_holder(u) for u in session.scalars(select(Unit.id).where(
            Unit.id.in_(unit_ids[chunk:chunk + 500]), Unit.status.in_([s.value for s in UNIT_DONE])))}
    return done


def _reconcile_worker_pools(
    factory: sessionmaker[Session], limiter: Limiter, run_ids: list[int], *, lease_s: float
) -> dict[str, int]:
    """``allowed_concurrent``: each worker's tokens for the units they hold assigned. Under
    ``maximum_units_per_worker``: each worker's units assigned or submitted in every run of the task, as
    Mephisto counts them (a unit that timed out, was returned or expired counts no more), for every
    worker who ever had an agent there, so one whose only unit timed out is not locked out.

    A request takes a worker's tokens between choosing a unit and claiming it, so a token the database
    does not account for may be a claim in flight: while its unit is still ``launched`` and the worker
    has no agent on it, the token is left alone (its request claims the unit or gives the token back; a
    leased one left by a dead process runs out, and one that never expires goes once its unit is taken
    or expired). Only tokens whose claim can no longer succeed are dropped, and a token taken after the
    snapshot is never touched."""
    with read_transaction(factory) as session:
        pools = _worker_pools(session, run_ids)
    if not pools:
        return {}
    seen = {pool: limiter.holders(pool) for pool in pools}
    with read_transaction(factory) as session:
        recount = _worker_pools(session, run_ids)
        doubtful = {pool: {int(h[5:]) for h in seen.get(pool, set()) - holders
                           if h.startswith("unit:") and h[5:].isdigit()}
                    for pool, (holders, _, _) in recount.items()}
        in_flight = _claimable(session, {(unit_id, recount[pool][2], recount[pool][1])
                                         for pool, ids in doubtful.items() for unit_id in ids})
    counts: dict[str, int] = {}
    for pool, (holders, leased, worker_id) in recount.items():
        keep = {unit_holder(u) for u in doubtful[pool] if (u, worker_id, leased) in in_flight}
        counts[pool] = limiter.reconcile(pool, holders, lease_s if leased else None,
                                         seen=seen.get(pool, set()) - keep)
    return counts


def _claimable(session: Session, tokens: set[tuple[int, int, bool]]) -> set[tuple[int, int, bool]]:
    """Of (unit, worker, leased) tokens the recount did not account for, those to leave alone: a request
    may still be claiming the unit (it is launched and the worker has no agent on its assignment), or the
    claim was committed after the recount was read (the unit counts for the worker now). One statement,
    so one snapshot: whichever side of the claim's commit it falls on, the token is kept."""
    unit_ids = sorted({unit_id for unit_id, _, _ in tokens})
    units: dict[int, tuple[str, int | None]] = {}
    agents: set[tuple[int, int]] = set()
    for chunk in range(0, len(unit_ids), 500):
        for unit_id, status, holder, agent_worker in session.execute(
                select(Unit.id, Unit.status, Unit.worker_id, Agent.worker_id)
                .outerjoin(Agent, Agent.assignment_id == Unit.assignment_id)
                .where(Unit.id.in_(unit_ids[chunk:chunk + 500]))):
            units[int(unit_id)] = (str(status), holder)
            if agent_worker is not None:
                agents.add((int(unit_id), int(agent_worker)))
    assigned = {UnitStatus.ASSIGNED.value}
    taken = assigned | {s.value for s in UNIT_SUBMITTED}
    kept: set[tuple[int, int, bool]] = set()
    for unit_id, worker_id, leased in tokens:
        status, holder = units.get(unit_id, ("", None))
        counts = holder == worker_id and status in (assigned if leased else taken)
        if counts or (status == UnitStatus.LAUNCHED.value and (unit_id, worker_id) not in agents):
            kept.add((unit_id, worker_id, leased))
    return kept


def _worker_pools(session: Session, run_ids: list[int]) -> dict[str, tuple[set[str], bool, int]]:
    """Per-worker pool -> (the holders the database says it has, whether its tokens are leased, the
    worker)."""
    held = [UnitStatus.ASSIGNED.value] + [s.value for s in UNIT_SUBMITTED]
    pools: dict[str, tuple[set[str], bool, int]] = {}
    runs = session.execute(
        select(TaskRun.id, TaskRun.task_id, TaskRun.config, Task.task_name)
        .join(Task, Task.id == TaskRun.task_id).where(TaskRun.id.in_(run_ids))
    ).all()
    seen_tasks: set[int] = set()
    for run_id, task_id, config, task_name in runs:
        task = RunConfig.parse(config).task
        if task.allowed_concurrent:
            for unit_id, worker_id in session.execute(select(Unit.id, Unit.worker_id).where(
                    Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value,
                    Unit.worker_id.is_not(None))):
                pools.setdefault(keys.worker_assigned_pool(run_id, worker_id or 0), (set(), True, worker_id or 0))[0].add(
                    unit_holder(unit_id))
        if task.maximum_units_per_worker and task_id not in seen_tasks:
            seen_tasks.add(task_id)
            in_task = select(TaskRun.id).where(TaskRun.task_id == task_id)
            for worker_id in session.scalars(select(Agent.worker_id).distinct()
                                             .where(Agent.task_run_id.in_(in_task))):
                pools.setdefault(keys.worker_task_units_pool(task_name, worker_id), (set(), False, worker_id))
            for unit_id, worker_id in session.execute(
                    select(Unit.id, Unit.worker_id).where(Unit.task_run_id.in_(in_task), Unit.status.in_(held),
                                                          Unit.worker_id.is_not(None))):
                pools.setdefault(keys.worker_task_units_pool(task_name, worker_id or 0), (set(), False, worker_id or 0))[0].add(
                    unit_holder(unit_id))
    return pools


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
