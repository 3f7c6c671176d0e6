"""Bulk review decisions (a ``ReviewBatch``): made at once, worked by Celery after the commit.

Making a batch writes its row and an outbox message (``db.outbox``, kind ``review_batch``) in one
transaction; the caller sends the message after the commit, and beat's outbox sweep sends it again until
it was carried out. Working a message decides the batch's units in chunks. Each chunk's decisions
(``review.decisions.decide``: a compare-and-set on each unit and one ledger row per provider call, keyed
by the unit) commit with the batch's ``position`` moved on from where the chunk started, so a chunk re-run
after its worker died (its claim went stale and the sweep sent the message again) finds the position moved
and decides nothing twice; the provider calls a chunk caused are sent after its commit (beat re-sends any
whose send was lost). A message works for a slice of time, then hands the rest to a message of its own,
keyed by the position reached, so that no delivery runs near its time limit whatever the batch's size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db import outbox
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import OutboxMessage, ReviewBatch, TaskRun, Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.errors import NotFoundError
from mephisto_dist.queue import send_outbox
from mephisto_dist.review.decisions import (
    AlreadyDecided,
    Decision,
    NotReviewable,
    ReviewError,
    check_decision,
    check_reviewable,
    decide,
)
from mephisto_dist.review.sending import send_calls
from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)

Factory = sessionmaker[Session]
CHUNK_UNITS = 50
"""Units decided in one transaction: small enough to hold the batch's row lock briefly."""
MAX_SLICE_S = 20.0


@dataclass(frozen=True)
class BatchProgress:
    batch_id: int
    run_id: int | None
    decision: Decision
    decided_by: str | None
    total: int
    worked: int
    decided: int
    skipped: int
    last_skip: str | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def _progress(batch: ReviewBatch) -> BatchProgress:
    return BatchProgress(batch.id, batch.task_run_id, Decision(batch.decision), batch.decided_by, batch.total,
                         batch.position, batch.decided, batch.skipped, batch.last_skip, batch.created_at,
                         batch.finished_at)


@dataclass(frozen=True)
class Started:
    batch: BatchProgress
    message_id: int
    """The outbox message that starts the work: the caller sends it after the commit (``start_work``)."""


def start_batch(factory: Factory, decision: Decision, unit_ids: Sequence[int], *, run_id: int | None,
                note: str | None, bonus: float | None, by: str | None, now: datetime) -> Started:
    """Record the batch and the message that starts it. Refused, with nothing written, when the decision
    is wrong whatever the unit, no unit is named, or a unit is missing or not completed (a unit decided by
    someone else after this is skipped when its turn comes, never overridden)."""
    check_decision(decision, note, bonus)
    ids = list(dict.fromkeys(int(unit_id) for unit_id in unit_ids))
    if not ids:
        raise ReviewError("no unit to decide")
    with transaction(factory) as session:
        seen = check_reviewable(session, ids, decision)
        for unit_id in ids:
            if seen[unit_id] != UnitStatus.COMPLETED:  # overriding a rejection is a decision of its own
                raise NotReviewable(f"unit {unit_id} is {seen[unit_id].value}; a batch decides completed units only")
        batch = ReviewBatch(task_run_id=run_id, decision=decision.value, note=note, bonus=bonus, decided_by=by,
                            unit_ids=ids, total=len(ids), position=0, decided=0, skipped=0, created_at=now)
        session.add(batch)
        session.flush()
        message_id = _continue_at(session, batch.id, 0, run_id, now=now)
        return Started(_progress(batch), message_id)


def _continue_at(session: Session, batch_id: int, position: int, run_id: int | None, *, now: datetime) -> int:
    message_id = outbox.add(session, outbox.REVIEW_BATCH, f"{batch_id}:{position}", run_id=run_id,
                            payload={"batch_id": batch_id, "position": position}, now=now)
    if message_id is None:  # the same position handed over twice (a re-run slice): that message stands
        found = session.scalar(select(OutboxMessage.id).where(
            OutboxMessage.key == f"{outbox.REVIEW_BATCH}:{batch_id}:{position}"))
        assert found is not None
        return int(found)
    return message_id


def start_work(runtime: Runtime, started: Started) -> None:
    """After the commit: to the Celery workers; with no Redis configured (the embedded default, where no
    worker runs between runs), worked in this process, to the end (call it off the request's thread)."""
    if not runtime.settings.embedded_redis:
        send_outbox(runtime.queue, [started.message_id])
        return
    with transaction(runtime.sessions) as session:
        claimed = outbox.claim(session, started.message_id, now=datetime.now(UTC),
                               stale_after_s=runtime.settings.outbox_claim_stale_s)
    if claimed is None:
        return  # a worker of an attached run took it
    try:
        work_batch(runtime, started.batch.batch_id, slice_s=None)
    except Exception as error:
        log.exception("review batch %s failed", started.batch.batch_id)
        with transaction(runtime.sessions) as session:
            outbox.give_up_or_retry(session, claimed, f"{type(error).__name__}: {error}",
                                    max_attempts=runtime.settings.outbox_max_attempts, now=datetime.now(UTC))
        return
    with transaction(runtime.sessions) as session:
        outbox.finish(session, claimed, now=datetime.now(UTC))


class _Overtaken(Exception):
    """Another delivery moved the batch on while this one decided a chunk: this chunk is rolled back."""


@dataclass(frozen=True)
class _Chunk:
    call_ids: tuple[int, ...]
    progress: BatchProgress
    handed_over: int | None


def _work_chunk(session: Session, batch_id: int, *, now: datetime, chunk_units: int, hand_over: bool,
                ) -> _Chunk | None:
    batch = session.scalars(select(ReviewBatch).where(ReviewBatch.id == batch_id).with_for_update()).first()
    if batch is None:
        raise NotFoundError(f"review batch {batch_id} does not exist")
    start = batch.position
    if start >= batch.total:
        return None
    decision = Decision(batch.decision)
    call_ids: list[int] = []
    decided = 0
    skips: list[str] = []
    for unit_id in batch.unit_ids[start:start + chunk_units]:
        try:
            with session.begin_nested():
                # Only what still waits: a rejection made since the batch was asked for is not overridden.
                reviewed = decide(session, int(unit_id), decision, now=now, note=batch.note, bonus=batch.bonus,
                                  by=batch.decided_by, only_from=(UnitStatus.COMPLETED,))
            call_ids.extend(reviewed.call_ids)
            decided += 1
        except (AlreadyDecided, NotReviewable, NotFoundError) as error:
            skips.append(str(error))
    end = min(start + chunk_units, batch.total)
    finished = end >= batch.total
    values: dict[str, Any] = {"position": end, "decided": ReviewBatch.decided + decided,
                              "skipped": ReviewBatch.skipped + len(skips)}
    if skips:
        values["last_skip"] = skips[-1]
    if finished:
        values["finished_at"] = now
    moved = session.execute(update(ReviewBatch).where(ReviewBatch.id == batch_id, ReviewBatch.position == start)
                            .values(**values).execution_options(synchronize_session=False))
    if not moved.rowcount:  # type: ignore[attr-defined]
        raise _Overtaken
    handed_over = None
    if hand_over and not finished:
        handed_over = _continue_at(session, batch_id, end, batch.task_run_id, now=now)
    session.expire(batch)
    return _Chunk(tuple(call_ids), _progress(batch), handed_over)


def work_batch(runtime: Runtime, batch_id: int, *, slice_s: float | None, chunk_units: int = CHUNK_UNITS,
               ) -> BatchProgress:
    """Decide the batch's units from where it stands, chunk by chunk, sending each chunk's provider calls
    after its commit; after ``slice_s`` (None: never) the rest goes to a new outbox message, sent here."""
    started = time.monotonic()
    while True:
        hand_over = slice_s is not None and time.monotonic() - started >= slice_s
        try:
            with transaction(runtime.sessions) as session:
                chunk = _work_chunk(session, batch_id, now=datetime.now(UTC), chunk_units=chunk_units,
                                    hand_over=hand_over)
        except _Overtaken:
            log.info("review batch %s was moved on by another delivery: this one stops", batch_id)
            return batch_progress(runtime.sessions, batch_id)
        if chunk is None:
            return batch_progress(runtime.sessions, batch_id)
        for problem in send_calls(runtime, chunk.call_ids):
            log.warning("review batch %s: %s", batch_id, problem)
        if chunk.handed_over is not None:
            send_outbox(runtime.queue, [chunk.handed_over])
            return chunk.progress
        if chunk.progress.finished:
            return chunk.progress


def batch_event(runtime: Runtime, payload: Mapping[str, Any]) -> None:
    """The outbox handler (``review_batch``): a slice of work, short enough to stay far below the claim's
    staleness and the delivery's time limit."""
    slice_s = min(MAX_SLICE_S, 0.25 * runtime.settings.outbox_claim_stale_s)
    work_batch(runtime, int(payload["batch_id"]), slice_s=slice_s)


EVENTS = {outbox.REVIEW_BATCH: batch_event}
"""The outbox kinds this module carries out, for the face that delivers outbox messages."""


def batch_progress(factory: Factory, batch_id: int) -> BatchProgress:
    with read_transaction(factory) as session:
        batch = session.get(ReviewBatch, batch_id)
        if batch is None:
            raise NotFoundError(f"review batch {batch_id} does not exist")
        return _progress(batch)


def recent_batches(factory: Factory, run_id: int, *, limit: int = 5) -> list[BatchProgress]:
    """The run's latest batches, newest first."""
    with read_transaction(factory) as session:
        return [_progress(batch) for batch in session.scalars(
            select(ReviewBatch).where(ReviewBatch.task_run_id == run_id).order_by(ReviewBatch.id.desc()).limit(limit))]


@dataclass(frozen=True)
class Waiting:
    """Completed units waiting for a decision, as a bulk approval's preview shows them."""

    unit_ids: tuple[int, ...]
    reward: float


def completed_waiting(factory: Factory, run_id: int, *, worker_id: int | None = None) -> Waiting:
    """The run's completed units (of one worker with ``worker_id``), in id order, and their rewards."""
    with read_transaction(factory) as session:
        if session.get(TaskRun, run_id) is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        query = select(Unit.id, Unit.pay_amount).where(Unit.task_run_id == run_id,
                                                       Unit.status == UnitStatus.COMPLETED.value)
        if worker_id is not None:
            query = query.where(Unit.worker_id == worker_id)
        rows = session.execute(query.order_by(Unit.id)).all()
    return Waiting(tuple(int(unit_id) for unit_id, _ in rows), float(sum(pay for _, pay in rows)))


def unfinished_batch_ids(factory: Factory) -> list[int]:
    with read_transaction(factory) as session:
        return list(session.scalars(select(ReviewBatch.id).where(ReviewBatch.finished_at.is_(None))
                                    .order_by(ReviewBatch.id)))


def finish_here(runtime: Runtime) -> None:
    """With no Redis configured: work every unfinished batch to the end in this process (a review app
    that stopped mid-batch finishes it when it starts again). Their outbox messages stay for a run's
    sweep, which finds the batches finished and decides nothing."""
    try:
        unfinished = unfinished_batch_ids(runtime.sessions)
    except Exception:  # the database is away: the next start tries again
        log.exception("unfinished review batches could not be listed")
        return
    for batch_id in unfinished:
        try:
            work_batch(runtime, batch_id, slice_s=None)
        except Exception:  # one batch's failure must not stop the others; the next start tries again
            log.exception("review batch %s could not be finished", batch_id)
