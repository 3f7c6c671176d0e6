"""The reconcile log: one row per finding, written when the work is claimed and stamped when it is done."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import ReconcileRecord


def record(session: Session, reconciler: str, subject: str, found: str, action: str, *,
           task_run_id: int | None, now: datetime, done: bool) -> int:
    row = ReconcileRecord(reconciler=reconciler, subject=subject, task_run_id=task_run_id, found=found,
                          action=action, created_at=now, done_at=now if done else None)
    session.add(row)
    session.flush()
    return row.id


def mark_done(session: Session, record_id: int, *, now: datetime, error: str | None = None) -> None:
    session.connection().execute(update(ReconcileRecord).where(ReconcileRecord.id == record_id)
                                 .values(done_at=None if error else now, error=error))


def recent(session: Session, *, task_run_id: int | None = None, limit: int = 20) -> Sequence[ReconcileRecord]:
    query = select(ReconcileRecord).order_by(ReconcileRecord.id.desc()).limit(limit)
    if task_run_id is not None:
        query = query.where(ReconcileRecord.task_run_id == task_run_id)
    return session.scalars(query).all()


@dataclass(frozen=True)
class Reconciled:
    """One finding of a reconciler and what it did about it."""

    created_at: datetime
    reconciler: str
    subject: str
    found: str
    action: str
    done_at: datetime | None
    error: str | None


def recent_findings(factory: sessionmaker[Session], *, task_run_id: int | None = None,
                    limit: int = 20) -> list[Reconciled]:
    """What the reconcilers found and did (about one run, or any), newest first."""
    with read_transaction(factory) as session:
        return [Reconciled(r.created_at, r.reconciler, r.subject, r.found, r.action, r.done_at, r.error)
                for r in recent(session, task_run_id=task_run_id, limit=limit)]
