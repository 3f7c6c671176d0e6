"""TaskRuns: creating one with its assignments and units in one transaction, counting, and noticing when
a run is done. Launching its units is ``mephisto_dist.runs.launches``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.architects import plan_server
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Assignment, Requester, Task, TaskRun, Unit
from mephisto_dist.db.prepared import run as run_prepared
from mephisto_dist.db.unique_rows import get_or_create
from mephisto_dist.domain.status import UNIT_DONE, UnitStatus
from mephisto_dist.limiter import Limiter
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens
from mephisto_dist.providers import CrowdProvider, make_provider


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
    # A run names its requester on purpose: one removed (``requesters remove``) is in use again, listed.
    session.execute(update(Requester).where(Requester.id == requester_id, Requester.removed_at.is_not(None))
                    .values(removed_at=None))
    run = TaskRun(
        task_id=task_id, requester_id=requester_id, blueprint_type=new.blueprint_type,
        architect_type=new.architect_type, provider_type=new.provider_type, sandbox=new.sandbox,
        config=new.config, task_dir=new.task_dir, build_dir=new.build_dir, bundle_key=new.bundle_key,
        server_url=new.server_url,
        max_concurrent_units=new.max_concurrent_units, created_at=now,
    )
    session.add(run)
    session.flush()
    # Inserted in one batch, then read back in data order: on SQLite an insert RETURNING the ids in
    # parameter order is one statement per row (300 statements for 300 rows, most of a run's creation).
    session.execute(insert(Assignment), [{"task_run_id": run.id, "data_index": i, "data": data, "created_at": now}
                                         for i, data in enumerate(new.assignment_data)])
    assignment_ids = list(session.scalars(
        select(Assignment.id).where(Assignment.task_run_id == run.id).order_by(Assignment.data_index)))
    session.execute(insert(Unit), [
        {"assignment_id": assignment_id, "task_run_id": run.id, "unit_index": index,
         "pay_amount": new.pay_amount, "status": UnitStatus.CREATED.value,
         "created_at": now, "status_changed_at": now}
        for assignment_id in assignment_ids for index in range(new.units_per_assignment)
    ])
    return run.id


_PORT_LOCK_BASE = 0x6D640000  # "md" and the port: one PostgreSQL advisory lock per port


def run_on_port(session: Session, port: int, *, exclude: int | None = None) -> tuple[int, str] | None:
    """The open run (id, task name) whose server listens on ``port``, if any: a run is open until it
    completes, since workers may still be working on it after a shutdown was asked for.

    Taken under a per-port lock held to the end of the caller's transaction (PostgreSQL's advisory
    lock; SQLite's write lock is already held), so two runs created at once cannot both find it free.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PORT_LOCK_BASE + port})
    rows = session.execute(select(TaskRun.id, TaskRun.architect_type, TaskRun.config, Task.task_name)
                           .join(Task, Task.id == TaskRun.task_id).where(TaskRun.is_completed.is_(False))
                           .order_by(TaskRun.id)).all()
    for run_id, architect_type, config, task_name in rows:
        plan = plan_server(architect_type, RunConfig.parse(config).architect.args)
        if run_id != exclude and plan.should_run_server and plan.port == port:
            return int(run_id), str(task_name)
    return None


def port_taken_message(port: int, holder: tuple[int, str], *, can_override: bool) -> str:
    run_id, task_name = holder
    message = (f"port {port} is served for open task run {run_id} ({task_name}), whose workers would lose "
               f"their submissions; ")
    if can_override:
        return message + f"pick another with mephisto.architect.port=N, or stop it with mephisto-dist shutdown {run_id}"
    return message + f"stop it first with mephisto-dist shutdown {run_id}"


def unit_counts(session: Session, run_id: int) -> dict[UnitStatus, int]:
    rows = session.execute(
        select(Unit.status, func.count()).where(Unit.task_run_id == run_id).group_by(Unit.status)
    )
    return {UnitStatus(status): int(count) for status, count in rows}


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)  # our own status names, never input


# Whether the run has a unit not done, or an outbox message (a unit's TaskRunner event) not carried out:
# one statement, its text built once, on the (run, status) indexes (NOT IN would walk the run). An
# uncapped run's every submission asks it (a capped one knows the answer: it just bound the next unit
# to the freed slot), so it stays one round trip with nothing to compile.
_UNDONE = text(
    "SELECT EXISTS (SELECT 1 FROM unit WHERE task_run_id = :run_id AND status IN "
    f"({_quoted([s.value for s in UnitStatus if s not in UNIT_DONE])})) "
    "OR EXISTS (SELECT 1 FROM outbox_message WHERE task_run_id = :run_id AND status IN "
    f"({_quoted(outbox.UNFINISHED)}))")


def mark_completed_if_done(session: Session, run_id: int, *, now: datetime) -> bool:
    """Mark the run completed when every unit is done and every outbox message of the run (a unit's
    TaskRunner event) carried out or failed; True only for the call that marked it."""
    if run_prepared(session.connection(), _UNDONE, {"run_id": run_id}).scalar():
        return False
    result = session.execute(
        update(TaskRun).where(TaskRun.id == run_id, TaskRun.is_completed.is_(False))
        .values(is_completed=True, completed_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class UnitClosed:
    """What follows a unit's submitted event: its run closed or not, and whether its freed slot should
    be refilled by a Celery launch (a provider whose publishing costs a remote call)."""

    run_id: int
    run_completed: bool
    refill: bool


def close_submitted_unit(sessions: sessionmaker[Session], limiter: Limiter, unit_id: int, *,
                         now: datetime) -> UnitClosed | None:
    """After a unit's on-submitted event: close its run when this was its last unit (after the hook, so
    that it is not lost), then give the unit's tokens back (again: idempotent). ``None`` for an unknown
    unit."""
    with transaction(sessions) as session:
        row = session.execute(select(Unit.task_run_id, TaskRun.provider_type, TaskRun.config, Unit.launch_id,
                                     Unit.worker_id, Task.task_name)
                              .join(TaskRun, TaskRun.id == Unit.task_run_id).join(Task, Task.id == TaskRun.task_id)
                              .where(Unit.id == unit_id)).first()
        if row is None:
            return None
        run_id, provider_type, config, launch_id, worker_id, task_name = row
        completed = mark_completed_if_done(session, run_id, now=now)
    freed = release_unit_tokens(limiter, [UnitTokens(run_id, unit_id, launch_id, UnitStatus.COMPLETED,
                                                     worker_id, task_name)])
    instant = make_provider(provider_type, RunConfig.parse(config).provider.args).publishes_instantly
    return UnitClosed(run_id, completed, bool(freed) and not completed and not instant)


def run_provider_of(sessions: sessionmaker[Session], run_id: int) -> CrowdProvider | None:
    """The provider a run publishes on, from its stored config; ``None`` for an unknown run."""
    with read_transaction(sessions) as session:
        found = session.execute(select(TaskRun.provider_type, TaskRun.config).where(TaskRun.id == run_id)).first()
    if found is None:
        return None
    return make_provider(found[0], RunConfig.parse(found[1]).provider.args)


def open_runs_on(sessions: sessionmaker[Session], provider_types: Sequence[str]) -> list[int]:
    """The runs not yet completed that publish on one of these providers."""
    with read_transaction(sessions) as session:
        return list(session.scalars(select(TaskRun.id).where(
            TaskRun.is_completed.is_(False), TaskRun.provider_type.in_(list(provider_types))).order_by(TaskRun.id)))
