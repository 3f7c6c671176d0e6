"""What the ``review`` commands do: decide units (named, or every completed one of a run or task), go
through completed units worker by worker, and send again what failed. Decisions commit with the provider
calls they cause (ledger rows), whose ids are returned for the caller to send after the commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import NotFoundError
from mephisto_dist.review.decisions import (
    AlreadyDecided,
    Decision,
    FailedCall,
    NotReviewable,
    Reviewed,
    UnitView,
    WorkerHistory,
    check_reviewable,
    completed_unit_ids,
    completed_units_by_worker,
    decide,
    failed_call_details,
    reset_failed_calls,
    unfinished_calls,
    unit_view,
    worker_histories,
)
from mephisto_dist.review.export import resolve_runs
from mephisto_dist.review.qualifications import block_worker, create_qualification, grant

Factory = sessionmaker[Session]


@dataclass(frozen=True)
class Decided:
    reviewed: tuple[Reviewed, ...]
    skipped: tuple[str, ...]
    """Why each unit not decided was skipped (decided by another reviewer, not reviewable)."""


def decide_units(factory: Factory, decision: Decision, unit_ids: Sequence[int], *, now: datetime,
                 note: str | None, bonus: float | None, by: str | None = None) -> Decided:
    """All or nothing: a unit missing, not reviewable or decided by another reviewer stops them all."""
    with transaction(factory) as session:
        check_reviewable(session, list(unit_ids), decision)
        return Decided(tuple(decide(session, unit_id, decision, now=now, note=note, bonus=bonus, by=by)
                             for unit_id in unit_ids), ())


def decide_completed(factory: Factory, decision: Decision, *, task_name: str | None, run_id: int | None,
                     now: datetime, note: str | None, bonus: float | None, by: str | None = None,
                     worker_id: int | None = None) -> Decided:
    """Every completed unit of the run (or of every run of the task; of one worker's units with
    ``worker_id``); one already decided is skipped."""
    reviewed: list[Reviewed] = []
    skipped: list[str] = []
    with transaction(factory) as session:
        run_ids = resolve_runs(session, task_name=task_name, run_id=run_id)
        for unit_id in completed_unit_ids(session, run_ids, worker_id=worker_id):
            try:
                with session.begin_nested():
                    reviewed.append(decide(session, unit_id, decision, now=now, note=note, bonus=bonus, by=by))
            except (AlreadyDecided, NotReviewable) as error:
                skipped.append(str(error))
    return Decided(tuple(reviewed), tuple(skipped))


def decide_unit(factory: Factory, unit_id: int, decision: Decision, *, now: datetime, note: str | None,
                bonus: float | None, by: str | None = None) -> Reviewed:
    with transaction(factory) as session:
        return decide(session, unit_id, decision, now=now, note=note, bonus=bonus, by=by)


def run_ids_of(factory: Factory, *, task_name: str | None, run_id: int | None) -> list[int]:
    """The run, or every run of the task (:class:`NotFoundError` for an unknown one)."""
    with read_transaction(factory) as session:
        return resolve_runs(session, task_name=task_name, run_id=run_id)


@dataclass(frozen=True)
class ReviewQueue:
    groups: tuple[tuple[int, list[int]], ...]
    """(worker id, completed unit ids) for each worker with units to review."""
    failed_calls: tuple[FailedCall, ...]


def review_queue(factory: Factory, run_ids: list[int]) -> ReviewQueue:
    with read_transaction(factory) as session:
        return ReviewQueue(tuple(completed_units_by_worker(session, run_ids)),
                           tuple(failed_call_details(session, run_ids)))


def worker_history(factory: Factory, worker_id: int) -> WorkerHistory:
    with read_transaction(factory) as session:
        return worker_histories(session, worker_ids=[worker_id])[0]


def unit_for_review(factory: Factory, unit_id: int) -> UnitView:
    with read_transaction(factory) as session:
        return unit_view(session, unit_id)


@dataclass(frozen=True)
class Blocked:
    message: str
    call_ids: tuple[int, ...]


def block_from_review(factory: Factory, worker_id: int, unit_id: int, reason: str, *, now: datetime) -> Blocked:
    """Block as Mephisto does: with the unit's run's block_qualification when it has one, else everywhere."""
    with transaction(factory) as session:
        run = session.get(TaskRun, unit_view(session, unit_id).task_run_id)
        block_qualification = RunConfig.parse(run.config if run is not None else None).blueprint.block_qualification
        if block_qualification:
            qualification_id, _ = create_qualification(session, block_qualification, now=now)
            sync = grant(session, qualification_id, worker_id, 1, now=now)
            # Copied to MTurk, where the HIT type requires its absence.
            return Blocked(f"worker blocked from tasks with block_qualification {block_qualification!r}",
                           (sync,) if sync else ())
        call_id = block_worker(session, worker_id, reason, now=now)
        return Blocked("worker blocked from every task" if call_id else "worker was already blocked",
                       (call_id,) if call_id else ())


@dataclass(frozen=True)
class ToResend:
    call_ids: tuple[int, ...]
    message_ids: tuple[int, ...]
    """Failed TaskRunner events (outbox messages), set back to be sent."""


def calls_and_events_to_resend(factory: Factory, run_id: int | None, *, now: datetime) -> ToResend:
    """Provider calls never carried out or failed every attempt, and failed outbox messages (of one run,
    or of every run), set back to pending; :class:`NotFoundError` for an unknown run."""
    with transaction(factory) as session:
        if run_id is not None and session.get(TaskRun, run_id) is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        run_ids = None if run_id is None else [run_id]
        call_ids = unfinished_calls(session, now=now, run_ids=run_ids) + reset_failed_calls(session, run_ids)
        messages = outbox.reset_failed(session, run_ids)
    return ToResend(tuple(call_ids), tuple(messages))
