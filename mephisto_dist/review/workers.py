"""What ``workers ...`` and ``qualifications ...`` do: workers' records, blocking and unblocking,
onboarding resets, notifications, and granting and revoking qualifications. Each write commits its
decision with the provider calls it causes (ledger rows) and returns their ids, for the caller to send
after the commit (``review.dispatch``)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, GrantedQualification, Qualification, Task, TaskRun, Unit, Worker
from mephisto_dist.domain.qualifications import FAILED_SUFFIX
from mephisto_dist.domain.status import UNIT_SUBMITTED, UnitStatus
from mephisto_dist.errors import NotAllowed, NotFoundError
from mephisto_dist.review.decisions import WorkerHistory, worker_histories
from mephisto_dist.review.export import resolve_runs
from mephisto_dist.review.qualifications import (
    Grant,
    QualificationSummary,
    block_worker,
    check_name,
    clear_onboarding,
    create_qualification,
    find_qualification,
    find_worker,
    grant,
    list_grants,
    list_qualifications,
    pending_worker_calls,
    record_notification,
    revoke,
    unblock_worker,
)

Factory = sessionmaker[Session]


@dataclass(frozen=True)
class Changed:
    """A write's outcome: whether it changed anything, and the provider calls to send after the commit."""

    changed: bool
    call_ids: tuple[int, ...]


@dataclass(frozen=True)
class WorkerRecords:
    histories: tuple[WorkerHistory, ...]
    soft_blocks: Mapping[int, Sequence[str]]
    """Worker id -> the block_qualifications of the task's runs the worker holds."""


def worker_records(factory: Factory, task_name: str | None = None) -> WorkerRecords:
    """Every worker's units and judgements (over one task: :class:`NotFoundError` for an unknown one)."""
    with transaction(factory) as session:
        task_id = None
        soft_blocks: dict[int, list[str]] = {}
        if task_name is not None:
            run_ids = resolve_runs(session, task_name=task_name, run_id=None)
            task_id = session.scalar(select(Task.id).where(Task.task_name == task_name))
            soft_blocks = _soft_blocks(session, run_ids)
        return WorkerRecords(tuple(worker_histories(session, task_id=task_id)), soft_blocks)


def _soft_blocks(session: Session, run_ids: list[int]) -> dict[int, list[str]]:
    """Workers holding the block_qualification of one of the runs: worker id -> qualification names."""
    names = set()
    for config in session.scalars(select(TaskRun.config).where(TaskRun.id.in_(run_ids))):
        name = RunConfig.parse(config).blueprint.block_qualification
        if name:
            names.add(str(name))
    held: dict[int, list[str]] = {}
    rows = session.execute(
        select(GrantedQualification.worker_id, Qualification.name)
        .join(Qualification, Qualification.id == GrantedQualification.qualification_id)
        .where(Qualification.name.in_(sorted(names)))
    )
    for worker_id, name in rows:
        held.setdefault(int(worker_id), []).append(name)
    return held


def block(factory: Factory, worker: str, provider_type: str | None, *, reason: str, qualification: str | None,
          now: datetime) -> Changed:
    """Block everywhere (and on the provider), or from the tasks of one block ``qualification`` (granted);
    ``changed`` is False when already blocked everywhere."""
    with transaction(factory) as session:
        found = find_worker(session, worker, provider_type)
        if qualification is not None:
            qualification_id, _ = create_qualification(session, qualification, now=now)
            grant(session, qualification_id, found.id, 1, now=now)
            return Changed(True, tuple(pending_worker_calls(session, found.id)))  # the grant, copied to MTurk
        call_id = block_worker(session, found.id, reason, now=now)
        return Changed(call_id is not None, () if call_id is None else (call_id,))


def unblock(factory: Factory, worker: str, provider_type: str | None, *, reason: str, qualification: str | None,
            now: datetime) -> Changed:
    """Lift the block everywhere, or one block ``qualification`` (:class:`NotAllowed` when not held);
    ``changed`` is False when the worker was not blocked."""
    with transaction(factory) as session:
        found = find_worker(session, worker, provider_type)
        if qualification is not None:
            if not revoke(session, find_qualification(session, qualification).id, found.id):
                raise NotAllowed(f"worker {worker} does not hold {qualification!r}")
            return Changed(True, tuple(pending_worker_calls(session, found.id)))  # the revoke, copied to MTurk
        call_id = unblock_worker(session, found.id, reason, now=now)
        return Changed(call_id is not None, () if call_id is None else (call_id,))


@dataclass(frozen=True)
class OnboardingCleared:
    removed: tuple[str, ...]
    call_ids: tuple[int, ...]


def reset_onboarding(factory: Factory, worker: str, provider_type: str | None, qualification: str,
                     ) -> OnboardingCleared:
    """Remove ``<NAME>`` and ``<NAME>-failed`` from the worker (:class:`NotFoundError` when neither exists)."""
    with transaction(factory) as session:
        found = find_worker(session, worker, provider_type)
        name = check_name(qualification)
        known = session.scalar(select(Qualification.id).where(
            Qualification.name.in_([name, name + FAILED_SUFFIX])).limit(1))
        if known is None:
            raise NotFoundError(f"no qualification named {name!r} or {name + FAILED_SUFFIX!r}")
        removed = clear_onboarding(session, found.id, name)
        return OnboardingCleared(tuple(removed), tuple(pending_worker_calls(session, found.id)))


def notify(factory: Factory, workers: Sequence[str], provider_type: str | None, subject: str, message: str, *,
           now: datetime) -> tuple[int, ...]:
    """Record a message to each worker (MTurk's NotifyWorkers); the ledger calls to send."""
    with transaction(factory) as session:
        return tuple(record_notification(session, find_worker(session, name, provider_type).id, subject, message,
                                         now=now) for name in workers)


def qualifications(factory: Factory) -> list[QualificationSummary]:
    with read_transaction(factory) as session:
        return list_qualifications(session)


def holders(factory: Factory, name: str) -> list[Grant]:
    """Who holds the qualification ``name`` (:class:`NotFoundError` for an unknown one)."""
    with read_transaction(factory) as session:
        return list_grants(session, find_qualification(session, name).id)


def create(factory: Factory, name: str, *, now: datetime) -> bool:
    """Create the qualification; False when it existed."""
    with transaction(factory) as session:
        return create_qualification(session, name, now=now)[1]


def grant_to(factory: Factory, name: str, worker: str, provider_type: str | None, value: int, *,
             now: datetime) -> tuple[int, ...]:
    """Give (or change) the worker's value of ``name``; the provider calls to send."""
    with transaction(factory) as session:
        qualification = find_qualification(session, name)
        found = find_worker(session, worker, provider_type)
        grant(session, qualification.id, found.id, value, now=now)
        return tuple(pending_worker_calls(session, found.id))


def revoke_from(factory: Factory, name: str, worker: str, provider_type: str | None) -> tuple[int, ...]:
    """Take ``name`` from the worker (:class:`NotAllowed` when not held); the provider calls to send."""
    with transaction(factory) as session:
        qualification = find_qualification(session, name)
        found = find_worker(session, worker, provider_type)
        if not revoke(session, qualification.id, found.id):
            raise NotAllowed(f"worker {worker} does not hold {name!r}")
        return tuple(pending_worker_calls(session, found.id))


@dataclass(frozen=True)
class RunTally:
    """A worker's submitted units in one run, by how they were judged."""

    run_id: int
    task_name: str
    submitted: int
    accepted: int
    rejected: int
    soft_rejected: int


@dataclass(frozen=True)
class WorkedUnit:
    unit_id: int
    run_id: int
    status: str
    seconds: float | None
    """From the agent's start to its submission."""
    submitted_at: datetime | None


@dataclass(frozen=True)
class WorkerDetail:
    history: WorkerHistory
    median_seconds: float | None
    """The median time from start to submission over every unit the worker submitted."""
    runs: tuple[RunTally, ...]
    units: tuple[WorkedUnit, ...]
    """The newest submitted units, at most the limit asked for."""
    qualifications: tuple[tuple[str, int], ...] = ()
    """The qualifications the worker holds, with their values, by name."""


def worker_detail(factory: Factory, worker_id: int, *, limit: int = 200) -> WorkerDetail:
    """One worker's record: how their submissions were judged overall and per run, the median time they
    took per unit, and their newest units."""
    submitted = [status.value for status in UNIT_SUBMITTED]
    with read_transaction(factory) as session:
        histories = worker_histories(session, worker_ids=[worker_id])
        if not histories:
            raise NotFoundError(f"worker {worker_id} does not exist")
        rows = session.execute(
            select(Unit.id, Unit.task_run_id, Unit.status, Agent.created_at, Agent.submitted_at, Task.task_name)
            .join(Agent, Agent.id == Unit.agent_id).join(TaskRun, TaskRun.id == Unit.task_run_id)
            .join(Task, Task.id == TaskRun.task_id)
            .where(Unit.worker_id == worker_id, Unit.status.in_(submitted)).order_by(Unit.id.desc())).all()
        held = tuple((str(name), int(value)) for name, value in session.execute(
            select(Qualification.name, GrantedQualification.value)
            .join(GrantedQualification, GrantedQualification.qualification_id == Qualification.id)
            .where(GrantedQualification.worker_id == worker_id).order_by(Qualification.name)))
    durations = sorted((done - started).total_seconds() for _, _, _, started, done, _ in rows
                       if started is not None and done is not None)
    tallies: dict[int, dict[str, Any]] = {}
    for _, run_id, status, _, _, task_name in rows:
        tally = tallies.setdefault(run_id, {"task_name": task_name, "n": 0, UnitStatus.ACCEPTED.value: 0,
                                            UnitStatus.REJECTED.value: 0, UnitStatus.SOFT_REJECTED.value: 0})
        tally["n"] += 1
        if status in tally:
            tally[status] += 1
    runs = tuple(RunTally(run_id, str(t["task_name"]), t["n"], t[UnitStatus.ACCEPTED.value],
                          t[UnitStatus.REJECTED.value], t[UnitStatus.SOFT_REJECTED.value])
                 for run_id, t in sorted(tallies.items(), reverse=True))
    units = tuple(WorkedUnit(unit_id, run_id, status,
                             (done - started).total_seconds() if started is not None and done is not None else None,
                             done)
                  for unit_id, run_id, status, started, done, _ in rows[:limit])
    return WorkerDetail(histories[0], statistics.median(durations) if durations else None, runs, units, held)


def grant_by_id(factory: Factory, worker_id: int, name: str, value: int, *, now: datetime) -> tuple[int, ...]:
    """Give (or change) the worker's value of ``name``, creating the qualification when it is new (as the
    TaskReview client's grant does); the provider calls to send."""
    name = check_name(name)
    with transaction(factory) as session:
        qualification_id, _ = create_qualification(session, name, now=now)
        if session.get(Worker, worker_id) is None:
            raise NotFoundError(f"worker {worker_id} does not exist")
        grant(session, qualification_id, worker_id, value, now=now)
        return tuple(pending_worker_calls(session, worker_id))


def revoke_by_id(factory: Factory, worker_id: int, name: str) -> tuple[int, ...]:
    """Take ``name`` from the worker (:class:`NotAllowed` when not held); the provider calls to send."""
    with transaction(factory) as session:
        qualification = find_qualification(session, check_name(name))
        worker = session.get(Worker, worker_id)
        if worker is None:
            raise NotFoundError(f"worker {worker_id} does not exist")
        if not revoke(session, qualification.id, worker_id):
            raise NotAllowed(f"worker {worker.worker_name} does not hold {name!r}")
        return tuple(pending_worker_calls(session, worker_id))
