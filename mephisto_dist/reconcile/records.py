"""The reconcile log: one row per finding, written when the work is claimed and stamped when it is done."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

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
