"""The outbox: work that must follow a committed state change, never lost when the broker blips.

The transaction that changes the state writes an :class:`~mephisto_dist.db.models.OutboxMessage`
(:func:`add`); after the commit its id is sent to Celery; beat re-sends (:func:`due`) what was never
sent, what a dead process held, and what failed once its backoff passed. A handler runs a message only
after claiming it (:func:`claim`, a compare-and-set that counts the attempt) and marks it done with
another (:func:`finish`), so a duplicate delivery (a re-delivered task, the sweep racing the first send)
finds it claimed or done and changes nothing. After ``max_attempts`` failed attempts a message is
``failed``: ``status`` shows it and ``review resend`` makes it pending again (:func:`reset_failed`).

The states are the provider-call ledger's (``review.CallStatus``): pending, claimed, done, failed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Insert, and_, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import OutboxMessage
from mephisto_dist.domain.launch import retry_delay_s

PENDING: Final = "pending"
CLAIMED: Final = "claimed"
DONE: Final = "done"
FAILED: Final = "failed"
UNFINISHED: Final = (PENDING, CLAIMED)

UNIT_SUBMITTED: Final = "unit_submitted"
UNIT_ASSIGNED: Final = "unit_assigned"
ASSIGNMENT_READY: Final = "assignment_ready"
"""Every unit of an assignment of a hosted concurrent runner is claimed: its runner is to start."""
ONBOARDING_READY: Final = "onboarding_ready"
"""A worker started onboarding on a run whose hosted runner plays onboarding worlds: it is to start."""
REVIEW_BATCH: Final = "review_batch"
"""A bulk review decision (``review.batches``) is to be worked, from a position in its list of units."""

CLAIM_STALE_AFTER_S: Final = 120.0
"""A claim not finished after this long is presumed held by a dead process and may be taken again (the
default of ``MEPHISTO_DIST_OUTBOX_CLAIM_STALE_S``, which the deliveries and the sweep are given)."""
SEND_GRACE_S: Final = 2.0
"""A message never attempted is left this long to its first send before the sweep sends it too."""
MAX_ERROR_CHARS: Final = 2000


def add(session: Session, kind: str, subject: str, *, run_id: int | None, payload: Mapping[str, Any],
        now: datetime) -> int | None:
    """Write the message for ``kind`` of ``subject`` in the caller's transaction; ``None`` when that change
    already has one (the key is ``kind:subject``)."""
    values = {"kind": kind, "key": f"{kind}:{subject}", "task_run_id": run_id, "payload": dict(payload),
              "status": PENDING, "attempts": 0, "created_at": now}
    statement: Insert
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert  # loaded by its engine anyway

        statement = postgresql_insert(OutboxMessage).values(values).on_conflict_do_nothing(index_elements=["key"])
    else:
        statement = sqlite_insert(OutboxMessage).values(values).on_conflict_do_nothing(index_elements=["key"])
    found = session.execute(statement.returning(OutboxMessage.id)).scalar()
    return None if found is None else int(found)


@dataclass(frozen=True)
class Claimed:
    message_id: int
    kind: str
    payload: Mapping[str, Any]
    attempt: int


def claim(session: Session, message_id: int, *, now: datetime,
          stale_after_s: float = CLAIM_STALE_AFTER_S) -> Claimed | None:
    """Take the message for this delivery (pending, or claimed by a process presumed dead); ``None``
    when another delivery holds it or it is done or failed."""
    stale = now - timedelta(seconds=stale_after_s)
    row = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id,
               or_(OutboxMessage.status == PENDING,
                   and_(OutboxMessage.status == CLAIMED, OutboxMessage.claimed_at < stale)))
        .values(status=CLAIMED, claimed_at=now, attempts=OutboxMessage.attempts + 1)
        .returning(OutboxMessage.kind, OutboxMessage.payload, OutboxMessage.attempts)).first()
    return None if row is None else Claimed(message_id, str(row.kind), dict(row.payload or {}), int(row.attempts))


def finish(session: Session, claimed: Claimed, *, now: datetime) -> bool:
    """Mark done, from this delivery's claim only: False when the claim was lost (taken as stale)."""
    return bool(session.connection().execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == claimed.message_id, OutboxMessage.status == CLAIMED,
               OutboxMessage.attempts == claimed.attempt)
        .values(status=DONE, done_at=now, last_error=None)).rowcount)


def unfinished(session: Session, message_id: int) -> tuple[str, dict[str, Any]] | None:
    """The message's kind and payload while it is not done (nor failed); ``None`` after."""
    row = session.execute(select(OutboxMessage.kind, OutboxMessage.payload)
                          .where(OutboxMessage.id == message_id, OutboxMessage.status.in_(UNFINISHED))).first()
    return None if row is None else (str(row.kind), dict(row.payload or {}))


def settle(session: Session, message_id: int, *, now: datetime) -> bool:
    """Mark done a message whose work is committed in this same transaction, by whichever delivery did it
    (the work's own compare-and-set is what makes it once: a hosted runner's start moves its agents from
    ``waiting``); False when it was done already."""
    return bool(session.connection().execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.status.in_(UNFINISHED))
        .values(status=DONE, done_at=now, last_error=None)).rowcount)


def give_up_or_retry(session: Session, claimed: Claimed, error: str, *, max_attempts: int, now: datetime) -> bool:
    """After a failed attempt: back to pending (the sweep re-sends it after a backoff), or failed for good
    once ``max_attempts`` were made; True when it failed for good."""
    failed = claimed.attempt >= max_attempts
    session.connection().execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == claimed.message_id, OutboxMessage.status == CLAIMED,
               OutboxMessage.attempts == claimed.attempt)
        .values(status=FAILED if failed else PENDING, last_error=error[:MAX_ERROR_CHARS],
                done_at=now if failed else None))
    return failed


def due(session: Session, *, now: datetime, retry_base_s: float, stale_after_s: float = CLAIM_STALE_AFTER_S,
        grace_s: float = SEND_GRACE_S, run_ids: Collection[int] | None = None) -> list[int]:
    """Messages to send again: never attempted (past a short grace for their first send), attempted and
    failed once their backoff passed, or claimed by a process presumed dead."""
    query = select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.attempts, OutboxMessage.created_at,
                   OutboxMessage.claimed_at).where(OutboxMessage.status.in_(UNFINISHED))
    if run_ids is not None:
        query = query.where(OutboxMessage.task_run_id.in_(list(run_ids)))
    found = []
    for message_id, status, attempts, created_at, claimed_at in session.execute(query.order_by(OutboxMessage.id)):
        if status == CLAIMED:
            send = claimed_at is None or claimed_at < now - timedelta(seconds=stale_after_s)
        elif not attempts or claimed_at is None:
            send = created_at <= now - timedelta(seconds=grace_s)
        else:
            send = claimed_at + timedelta(seconds=retry_delay_s(attempts, retry_base_s)) <= now
        if send:
            found.append(int(message_id))
    return found


def reset_failed(session: Session, run_ids: Collection[int] | None) -> list[int]:
    """Make failed messages pending again with a fresh count; their ids (send them after the commit)."""
    query = select(OutboxMessage.id).where(OutboxMessage.status == FAILED)
    if run_ids is not None:
        query = query.where(OutboxMessage.task_run_id.in_(list(run_ids)))
    ids = [int(i) for i in session.scalars(query)]
    if ids:
        session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids), OutboxMessage.status == FAILED)
                        .values(status=PENDING, attempts=0, done_at=None, claimed_at=None))
    return ids


@dataclass(frozen=True)
class FailedMessage:
    message_id: int
    run_id: int | None
    kind: str
    key: str
    attempts: int
    error: str


def failed_messages(session: Session, run_ids: Collection[int]) -> list[FailedMessage]:
    rows = session.execute(
        select(OutboxMessage.id, OutboxMessage.task_run_id, OutboxMessage.kind, OutboxMessage.key,
               OutboxMessage.attempts, OutboxMessage.last_error)
        .where(OutboxMessage.task_run_id.in_(list(run_ids)), OutboxMessage.status == FAILED)
        .order_by(OutboxMessage.id))
    return [FailedMessage(int(i), run_id, str(kind), str(key), int(attempts), error or "")
            for i, run_id, kind, key, attempts, error in rows]


def due_now(sessions: sessionmaker[Session], *, now: datetime, retry_base_s: float,
            stale_after_s: float = CLAIM_STALE_AFTER_S) -> list[int]:
    """:func:`due`, in a read transaction of its own (beat's sweep)."""
    with read_transaction(sessions) as session:
        return due(session, now=now, retry_base_s=retry_base_s, stale_after_s=stale_after_s)
