"""TaskRuns: creating one with its assignments and units in one transaction, launching units under the
concurrency pools, counting, and noticing when a run is done."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Assignment, Requester, Task, TaskRun, Unit
from mephisto_dist.db.transitions import move_units_each
from mephisto_dist.db.unique_rows import get_or_create
from mephisto_dist.domain.status import UNIT_ACTIVE, UNIT_DONE, UnitStatus
from mephisto_dist.errors import NotFoundError
from mephisto_dist.limiter import Limiter, PoolLimit, keys
from mephisto_dist.metrics import record_provider_call
from mephisto_dist.providers import CrowdProvider

LAUNCH_BATCH = 200
UNCAPPED_LAUNCH_BATCH = 1000


@dataclass(frozen=True)
class NewRun:
    """Everything a TaskRun is created from, validated beforehand."""

    task_name: str
    blueprint_type: str
    architect_type: str
    provider_type: str
    requester_name: str
    sandbox: bool
    config: dict[str, Any]
    task_dir: str
    build_dir: str
    server_url: str | None
    max_concurrent_units: int
    units_per_assignment: int
    pay_amount: float
    assignment_data: Sequence[dict[str, Any]]
    bundle_key: str | None = None


def create_task_run(session: Session, new: NewRun, *, now: datetime) -> int:
    """Create Task (if new), Requester (if new), TaskRun, Assignments and Units; return the run id.

    Runs inside the caller's transaction, so a failure leaves nothing behind.
    """
    task_id, _ = get_or_create(session, Task, {"task_name": new.task_name},
                               {"task_type": new.blueprint_type, "created_at": now})
    requester_id, _ = get_or_create(
        session, Requester, {"provider_type": new.provider_type, "requester_name": new.requester_name},
        {"created_at": now},
    )
    run = TaskRun(
        task_id=task_id, requester_id=requester_id, blueprint_type=new.blueprint_type,
        architect_type=new.architect_type, provider_type=new.provider_type, sandbox=new.sandbox,
        config=new.config, task_dir=new.task_dir, build_dir=new.build_dir, bundle_key=new.bundle_key,
        server_url=new.server_url,
        max_concurrent_units=new.max_concurrent_units, created_at=now,
    )
    session.add(run)
    session.flush()
    assignment_ids = list(session.scalars(
        insert(Assignment).returning(Assignment.id, sort_by_parameter_order=True),
        [{"task_run_id": run.id, "data_index": i, "data": data, "created_at": now}
         for i, data in enumerate(new.assignment_data)],
    ))
    session.execute(insert(Unit), [
        {"assignment_id": assignment_id, "task_run_id": run.id, "unit_index": index,
         "pay_amount": new.pay_amount, "status": UnitStatus.CREATED.value,
         "created_at": now, "status_changed_at": now}
        for assignment_id in assignment_ids for index in range(new.units_per_assignment)
    ])
    return run.id


def run_pool(run_id: int) -> str:
    return keys.run_units_pool(run_id)


GLOBAL_POOL = keys.deployment_units_pool()


def unit_holder(unit_id: int) -> str:
    """A unit's name as the holder of its concurrency tokens."""
    return f"unit:{unit_id}"


def unit_of_holder(holder: str) -> int | None:
    """The unit a token holder names, if it names one."""
    kind, _, number = holder.partition(":")
    return int(number) if kind == "unit" and number.isdigit() else None


@dataclass(frozen=True)
class LaunchContext:
    """What launching a run's units needs besides the database."""

    limiter: Limiter
    provider: CrowdProvider
    lease_s: float
    global_cap: int


_RUN_FOR_LAUNCH = select(TaskRun.is_completed, TaskRun.shutdown_requested_at, TaskRun.max_concurrent_units,
                         TaskRun.server_url).where(TaskRun.id == bindparam("run_id"))
_ACTIVE_COUNT = select(func.count()).select_from(Unit).where(
    Unit.task_run_id == bindparam("run_id"), Unit.status.in_([s.value for s in UNIT_ACTIVE]))
_STILL_CREATED = select(Unit.id).where(Unit.id.in_(bindparam("ids", expanding=True)),
                                      Unit.status == UnitStatus.CREATED.value)
_CREATED = (select(Unit.id).where(Unit.task_run_id == bindparam("run_id"), Unit.status == UnitStatus.CREATED.value)
            .order_by(Unit.id).limit(bindparam("limit")))


def launch_units(factory: sessionmaker[Session], ctx: LaunchContext, run_id: int, *, now: datetime) -> int:
    """Launch created units of a run while the concurrency pools have room; return how many.

    Safe to run from several processes at once: publishing is idempotent per unit (providers use the
    unit as their idempotency token) and the move to ``launched`` is a compare-and-set, so a unit
    another launcher got first just gives its token back. The database's count of active units says
    how many may launch; the Redis pool makes that decision atomic across processes. An uncapped run
    takes no tokens at all.
    """
    launched = 0
    while True:
        with transaction(factory) as session:
            connection = session.connection()
            run = connection.execute(_RUN_FOR_LAUNCH, {"run_id": run_id}).first()
            if run is None:
                raise NotFoundError(f"task run {run_id} does not exist")
            if run.is_completed or run.shutdown_requested_at is not None:
                return launched
            pool_state = ctx.limiter.state(run_pool(run_id))
            stored_cap = pool_state.cap_override
            cap = run.max_concurrent_units if stored_cap is None else stored_cap
            pools = [PoolLimit(run_pool(run_id), cap, ctx.lease_s)] if cap else []
            if ctx.global_cap:
                pools.append(PoolLimit(GLOBAL_POOL, ctx.global_cap, ctx.lease_s))
            batch = UNCAPPED_LAUNCH_BATCH
            if cap:
                active = int(connection.execute(_ACTIVE_COUNT, {"run_id": run_id}).scalar_one())
                batch = min(LAUNCH_BATCH, cap - active)
                if batch <= 0:
                    return launched
                if pool_state.held < active:
                    _repair_pool(session, ctx, run_id)
            candidates = list(connection.execute(_CREATED, {"run_id": run_id, "limit": batch}).scalars())
            taken: list[int] = []
            refused = False
            for unit_id in candidates if pools else ():
                if not ctx.limiter.acquire(unit_holder(unit_id), pools).ok:
                    refused = True
                    break
                taken.append(unit_id)
            if not pools:
                taken = candidates
            moved: set[int] = set()
            try:
                task_args = _task_args(session, run_id) if taken and not ctx.provider.publishes_instantly else {}
                try:
                    published = ctx.provider.publish_units(run_id, taken, run.server_url or "", task_args)
                except Exception:
                    record_provider_call(type(ctx.provider).__name__, "publish", "error", len(taken))
                    raise
                record_provider_call(type(ctx.provider).__name__, "publish", "ok", len(published))
                moved = set(move_units_each(session, [(p.unit_id, {"provider_unit_id": p.provider_unit_id})
                                                      for p in published],
                                            UnitStatus.CREATED, UnitStatus.LAUNCHED, now=now))
            except BaseException:
                _give_back(ctx, [u for u in taken if u not in moved], pools)  # publishing failed
                raise
            lost = [u for u in taken if u not in moved]
            if lost and pools:
                # A unit another launcher moved first keeps its token: the holder is the unit, so that
                # token is now the launched unit's (giving it back would let the pool admit one too
                # many). Only units still waiting (not published) give theirs back.
                _give_back(ctx, list(connection.execute(_STILL_CREATED, {"ids": lost}).scalars()), pools)
        launched += len(moved)
        if refused or cap or len(candidates) < batch:
            return launched


def _give_back(ctx: LaunchContext, unit_ids: Sequence[int], pools: Sequence[PoolLimit]) -> None:
    for unit_id in unit_ids if pools else ():
        ctx.limiter.release(unit_holder(unit_id), [p.pool for p in pools])


def _task_args(session: Session, run_id: int) -> dict[str, Any]:
    """The run's ``mephisto.task`` arguments, with the blueprint's qualification requirements and block
    qualification, which a remote provider turns into its own (MTurk's QualificationRequirements)."""
    config = session.scalar(select(TaskRun.config).where(TaskRun.id == run_id)) or {}
    blueprint = config.get("blueprint", {})
    return {**config.get("task", {}), "qualifications": blueprint.get("qualifications") or [],
            "block_qualification": blueprint.get("block_qualification")}


def _repair_pool(session: Session, ctx: LaunchContext, run_id: int) -> None:
    """The pool holds fewer tokens than the run has active units: it lost them (Redis restarted or was
    flushed). Rebuild it from the database before taking more, so the cap still holds."""
    pool = run_pool(run_id)
    seen = ctx.limiter.holders(pool)  # before the database is read: later launches keep their tokens
    ctx.limiter.reconcile(pool, pool_members(session, [run_id], seen), ctx.lease_s, seen=seen)


def pool_members(session: Session, run_ids: Sequence[int], current: set[str]) -> set[str]:
    """Who should hold the tokens of a pool over these runs, the database being the source of truth:
    every unit launched or assigned, plus those of the ``current`` holders whose unit is still
    ``created`` (a launch in flight: kept, and reused by the run's next launch if its launcher died)."""
    active = {unit_holder(u) for u in session.scalars(select(Unit.id).where(
        Unit.task_run_id.in_(list(run_ids)), Unit.status.in_([s.value for s in UNIT_ACTIVE])))}
    others = [unit_id for unit_id in map(unit_of_holder, current - active) if unit_id is not None]
    in_flight = {unit_holder(u) for u in session.scalars(select(Unit.id).where(
        Unit.id.in_(others), Unit.task_run_id.in_(list(run_ids)), Unit.status == UnitStatus.CREATED.value))}
    return active | in_flight


def unit_counts(session: Session, run_id: int) -> dict[UnitStatus, int]:
    rows = session.execute(
        select(Unit.status, func.count()).where(Unit.task_run_id == run_id).group_by(Unit.status)
    )
    return {UnitStatus(status): int(count) for status, count in rows}


def mark_completed_if_done(session: Session, run_id: int, *, now: datetime) -> bool:
    """Mark the run completed when every unit is done; True only for the call that marked it."""
    # Looking for the few not-done statuses uses the (run, status) index; NOT IN would walk the run.
    pending = session.scalar(
        select(Unit.id).where(
            Unit.task_run_id == run_id, Unit.status.in_([s.value for s in UnitStatus if s not in UNIT_DONE])
        ).limit(1)
    )
    if pending is not None:
        return False
    result = session.execute(
        update(TaskRun).where(TaskRun.id == run_id, TaskRun.is_completed.is_(False))
        .values(is_completed=True, completed_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
