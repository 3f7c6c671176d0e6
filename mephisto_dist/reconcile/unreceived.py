"""Submissions the provider holds that never reached us: recorded by the HIT reconciler (``reconcile.hits``)
with MTurk's answer, or by the study reconciler (``reconcile.studies``: Prolific holds no answer), waiting
for a researcher's review."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import ProviderSubmission

NEEDS_REVIEW = "needs review"


@dataclass(frozen=True)
class Unreceived:
    assignment_id: str
    worker_name: str
    hit_id: str
    task_run_id: int | None
    unit_id: int | None
    provider_status: str
    submitted_at: datetime | None
    answer: str | None
    provider_type: str = ""


def waiting_review(factory: sessionmaker[Session], task_run_id: int | None = None) -> int:
    """How many unreceived submissions (of one run, or any) wait for a review."""
    with read_transaction(factory) as session:
        query = select(func.count()).select_from(ProviderSubmission).where(
            ProviderSubmission.status == NEEDS_REVIEW)
        if task_run_id is not None:
            query = query.where(ProviderSubmission.task_run_id == task_run_id)
        return int(session.scalar(query) or 0)


def unreceived(factory: sessionmaker[Session], task_run_id: int | None = None) -> list[Unreceived]:
    """Every recorded submission that never reached us (of one run, or any), oldest first."""
    with read_transaction(factory) as session:
        query = select(ProviderSubmission).order_by(ProviderSubmission.id)
        if task_run_id is not None:
            query = query.where(ProviderSubmission.task_run_id == task_run_id)
        return [Unreceived(r.assignment_id, r.worker_name, r.hit_id, r.task_run_id, r.unit_id, r.provider_status,
                           r.submitted_at, r.answer, r.provider_type) for r in session.scalars(query)]


def waiting_review_by_provider(factory: sessionmaker[Session], task_run_id: int | None = None) -> dict[str, int]:
    """:func:`waiting_review`, per provider type."""
    with read_transaction(factory) as session:
        query = select(ProviderSubmission.provider_type, func.count()).where(
            ProviderSubmission.status == NEEDS_REVIEW).group_by(ProviderSubmission.provider_type)
        if task_run_id is not None:
            query = query.where(ProviderSubmission.task_run_id == task_run_id)
        return {str(provider_type): int(count) for provider_type, count in session.execute(query)}
