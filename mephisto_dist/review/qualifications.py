"""Qualifications and blocks: granting, revoking and listing qualifications, blocking workers, and
checking a worker's grants against a task's requirements.

The requirement checks are pure (``domain.qualifications``); what is here runs inside the caller's
transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import (
    Agent,
    GrantedQualification,
    OnboardingAgent,
    Qualification,
    TaskRun,
    Unit,
    Worker,
)
from mephisto_dist.db.unique_rows import get_or_create
from mephisto_dist.domain.qualifications import (
    FAILED_SUFFIX,
    MAX_NAME_CHARS,
)
from mephisto_dist.errors import ConfigError, NotFoundError, ServiceError
from mephisto_dist.providers import provider_class
from mephisto_dist.review.decisions import CallAction, record_call

log = logging.getLogger(__name__)

# -- reading -----------------------------------------------------------------------------------------


def granted_values(session: Session, worker_id: int) -> dict[str, int]:
    """A worker's qualifications, name -> value: the input of :func:`meets_requirements`."""
    rows = session.execute(
        select(Qualification.name, GrantedQualification.value)
        .join(GrantedQualification, GrantedQualification.qualification_id == Qualification.id)
        .where(GrantedQualification.worker_id == worker_id)
    )
    return {name: value for name, value in rows}


def worker_is_blocked(session: Session, worker_id: int, block_qualification: str | None) -> bool:
    """Blocked from every task, or (with the run's ``block_qualification``) holding that qualification,
    whatever its value: Mephisto turns a block qualification into a ``DoesNotExist`` requirement."""
    if session.scalar(select(Worker.is_blocked).where(Worker.id == worker_id)):
        return True
    if not block_qualification:
        return False
    held = session.scalar(
        select(GrantedQualification.id)
        .join(Qualification, Qualification.id == GrantedQualification.qualification_id)
        .where(GrantedQualification.worker_id == worker_id, Qualification.name == block_qualification)
    )
    return held is not None


def find_worker(session: Session, worker_name: str, provider_type: str | None = None) -> Worker:
    query = select(Worker).where(Worker.worker_name == worker_name)
    if provider_type is not None:
        query = query.where(Worker.provider_type == provider_type)
    found = list(session.scalars(query.order_by(Worker.provider_type)))
    if not found:
        on = f" on provider {provider_type!r}" if provider_type else ""
        raise NotFoundError(f"no worker named {worker_name!r}{on}")
    if len(found) > 1:
        providers = ", ".join(w.provider_type for w in found)
        raise ConfigError(f"worker {worker_name!r} exists on several providers ({providers}); pass --provider")
    return found[0]


def find_qualification(session: Session, name: str) -> Qualification:
    found = session.scalar(select(Qualification).where(Qualification.name == name))
    if found is None:
        known = list(session.scalars(select(Qualification.name).order_by(Qualification.name).limit(20)))
        hint = f"; known: {', '.join(known)}" if known else "; there are none yet"
        raise NotFoundError(f"no qualification named {name!r}{hint}")
    return found


@dataclass(frozen=True)
class QualificationSummary:
    name: str
    workers: int
    created_at: datetime


def list_qualifications(session: Session) -> list[QualificationSummary]:
    rows = session.execute(
        select(Qualification.name, func.count(GrantedQualification.id), Qualification.created_at)
        .outerjoin(GrantedQualification, GrantedQualification.qualification_id == Qualification.id)
        .group_by(Qualification.id, Qualification.name, Qualification.created_at)
        .order_by(Qualification.name)
    )
    return [QualificationSummary(name, count, created) for name, count, created in rows]


@dataclass(frozen=True)
class Grant:
    worker_name: str
    provider_type: str
    value: int
    granted_at: datetime


def list_grants(session: Session, qualification_id: int) -> list[Grant]:
    rows = session.execute(
        select(Worker.worker_name, Worker.provider_type, GrantedQualification.value,
               GrantedQualification.granted_at)
        .join(Worker, Worker.id == GrantedQualification.worker_id)
        .where(GrantedQualification.qualification_id == qualification_id)
        .order_by(Worker.worker_name)
    )
    return [Grant(*row) for row in rows]


# -- writing -----------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"a qualification name must have 1 to {MAX_NAME_CHARS} characters, got {name!r}")
    return name


def create_qualification(session: Session, name: str, *, now: datetime) -> tuple[int, bool]:
    """The qualification's id, creating it if needed; ``True`` when this call created it."""
    return get_or_create(session, Qualification, {"name": check_name(name)}, {"created_at": now})


def grant(session: Session, qualification_id: int, worker_id: int, value: int, *, now: datetime) -> int | None:
    """Give a worker a qualification with ``value``, or change the value they hold; on a provider with
    qualifications of its own, also record the call that copies it there (its id is returned)."""
    _set_grant(session, qualification_id, worker_id, value, now=now)
    return record_qualification_sync(session, qualification_id, worker_id, now=now)


def _set_grant(session: Session, qualification_id: int, worker_id: int, value: int, *, now: datetime) -> None:
    changed = session.execute(
        update(GrantedQualification)
        .where(GrantedQualification.qualification_id == qualification_id,
               GrantedQualification.worker_id == worker_id)
        .values(value=value, granted_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if changed:
        return
    try:
        with session.begin_nested():
            session.add(GrantedQualification(qualification_id=qualification_id, worker_id=worker_id,
                                             value=value, granted_at=now))
    except IntegrityError:  # granted by another process between our update and insert: ours is newer
        _set_grant(session, qualification_id, worker_id, value, now=now)


def count_unit(session: Session, unit_id: int, qualification_id: int, worker_id: int, *,
               now: datetime) -> bool:
    """Add one to the worker's grant (a counter: golds right or wrong, units completed) for this unit,
    once: the unit's counted marker is set by compare-and-set in the same transaction, and the grant is
    incremented in one statement, so neither a re-run of the unit's event nor a concurrent count of the
    worker's other unit loses or doubles a count; a provider with qualifications of its own gets the
    new value as :func:`grant` sends it. False when the unit was counted already."""
    marked = session.connection().execute(
        update(Unit).where(Unit.id == unit_id, Unit.counted_at.is_(None)).values(counted_at=now)).rowcount
    if not marked:
        return False
    _add_to_grant(session, qualification_id, worker_id, now=now)
    record_qualification_sync(session, qualification_id, worker_id, now=now)
    return True


def _add_to_grant(session: Session, qualification_id: int, worker_id: int, *, now: datetime) -> None:
    where = (GrantedQualification.qualification_id == qualification_id, GrantedQualification.worker_id == worker_id)
    added = session.connection().execute(update(GrantedQualification).where(*where).values(
        value=GrantedQualification.value + 1, granted_at=now)).rowcount
    if added:
        return
    try:
        with session.begin_nested():
            session.add(GrantedQualification(qualification_id=qualification_id, worker_id=worker_id, value=1,
                                             granted_at=now))
    except IntegrityError:  # another count made the row between our update and insert: add to it
        _add_to_grant(session, qualification_id, worker_id, now=now)


def revoke(session: Session, qualification_id: int, worker_id: int) -> bool:
    """Take a qualification away; ``False`` when the worker did not hold it."""
    removed = session.execute(
        delete(GrantedQualification)
        .where(GrantedQualification.qualification_id == qualification_id,
               GrantedQualification.worker_id == worker_id)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if removed:
        record_qualification_sync(session, qualification_id, worker_id, now=datetime.now(UTC))
    return bool(removed)


def record_qualification_sync(session: Session, qualification_id: int, worker_id: int, *,
                              now: datetime) -> int | None:
    """A ledger row copying the worker's standing on the qualification to their provider (MTurk), sent
    by the Celery worker after the commit (beat re-sends a row nobody sent); ``None`` for a provider that
    keeps no qualifications of its own."""
    worker = session.get(Worker, worker_id)
    name = session.scalar(select(Qualification.name).where(Qualification.id == qualification_id))
    if worker is None or name is None or not provider_class(worker.provider_type).syncs_qualifications:
        return None
    return record_call(
        session, CallAction.SYNC_QUALIFICATION, f"sync_qual:{worker_id}:{uuid.uuid4().hex}",
        provider_type=worker.provider_type, worker_id=worker_id, reason="updated by the requester", now=now,
        payload={"worker_name": worker.worker_name, "qualification_name": name,
                 "provider_args": _newest_provider_args(session, worker)})


def pending_worker_calls(session: Session, worker_id: int) -> list[int]:
    """The worker's qualification syncs and notifications not yet sent (to send after the commit)."""
    from mephisto_dist.db.models import ProviderCall

    return list(session.scalars(select(ProviderCall.id).where(
        ProviderCall.worker_id == worker_id, ProviderCall.status == "pending",
        ProviderCall.action.in_([CallAction.SYNC_QUALIFICATION.value, CallAction.NOTIFY.value]))
        .order_by(ProviderCall.id)))


def record_notification(session: Session, worker_id: int, subject: str, message: str, *, now: datetime) -> int:
    """A ledger row messaging one worker through their provider (MTurk's NotifyWorkers)."""
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFoundError(f"worker {worker_id} does not exist")
    if not subject.strip() or not message.strip():
        raise ConfigError("a notification needs a subject and a message")
    return record_call(
        session, CallAction.NOTIFY, f"notify:{worker_id}:{uuid.uuid4().hex}", provider_type=worker.provider_type,
        worker_id=worker_id, now=now,
        payload={"worker_name": worker.worker_name, "subject": subject, "message": message,
                 "provider_args": _newest_provider_args(session, worker)})


def _newest_provider_args(session: Session, worker: Worker) -> dict[str, Any]:
    """The provider account a worker is reached through: the one of the newest run they took a unit or
    onboarding in."""
    newest = None
    for holder in (Agent, OnboardingAgent):
        run_id = session.scalar(select(func.max(holder.task_run_id)).join(TaskRun, TaskRun.id == holder.task_run_id)
                               .where(holder.worker_id == worker.id, TaskRun.provider_type == worker.provider_type))
        newest = run_id if newest is None or (run_id is not None and run_id > newest) else newest
    config = session.scalar(select(TaskRun.config).where(TaskRun.id == newest)) if newest is not None else None
    return dict(RunConfig.parse(config).provider.args)


def clear_onboarding(session: Session, worker_id: int, qualification_name: str) -> list[str]:
    """Remove ``<name>`` and ``<name>-failed`` so the worker may take onboarding again; the names removed."""
    removed = []
    for name in (qualification_name, qualification_name + FAILED_SUFFIX):
        qualification_id = session.scalar(select(Qualification.id).where(Qualification.name == name))
        if qualification_id is not None and revoke(session, qualification_id, worker_id):
            removed.append(name)
    return removed


def block_worker(session: Session, worker_id: int, reason: str, *, now: datetime) -> int | None:
    """Block a worker from every task and record the block for the provider; the provider call's id, or
    ``None`` when the worker was already blocked."""
    blocked = session.execute(
        update(Worker).where(Worker.id == worker_id, Worker.is_blocked.is_(False))
        .values(is_blocked=True, block_reason=reason, blocked_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not blocked:
        return None
    return _record_block_call(session, CallAction.BLOCK, worker_id, reason, now=now)


def unblock_worker(session: Session, worker_id: int, reason: str, *, now: datetime) -> int | None:
    """Lift a block; the provider call's id, or ``None`` when the worker was not blocked."""
    lifted = session.execute(
        update(Worker).where(Worker.id == worker_id, Worker.is_blocked.is_(True))
        .values(is_blocked=False, block_reason=None, blocked_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not lifted:
        return None
    return _record_block_call(session, CallAction.UNBLOCK, worker_id, reason, now=now)


def _record_block_call(session: Session, action: CallAction, worker_id: int, reason: str, *,
                       now: datetime) -> int:
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFoundError(f"worker {worker_id} does not exist")
    # The provider account to block on: the one of the newest run this worker worked in, if any.
    newest_config = session.scalar(
        select(TaskRun.config).join(Unit, Unit.task_run_id == TaskRun.id)
        .where(Unit.worker_id == worker_id, TaskRun.provider_type == worker.provider_type)
        .order_by(TaskRun.id.desc()).limit(1)
    )
    # Blocks can be lifted and laid again, so each one gets a key of its own.
    return record_call(
        session, action, f"{action.value}:{worker_id}:{uuid.uuid4().hex}",
        provider_type=worker.provider_type, worker_id=worker_id, reason=reason, now=now,
        payload={"worker_name": worker.worker_name,
                 "provider_args": dict(RunConfig.parse(newest_config).provider.args)},
    )


class StoredWorkerQualifications:
    """A worker's qualifications for a task's own code (``hooks.WorkerQualifications``): each call is
    its own transaction, so a validator's grant is kept even if the code fails afterwards."""

    def __init__(self, sessions: sessionmaker[Session], send: Callable[[int], None] | None = None) -> None:
        self._sessions = sessions
        self._send = send  # sends a recorded provider call (its id) after the commit; beat re-sends the rest

    def granted(self, worker_id: int) -> dict[str, int]:
        with read_transaction(self._sessions) as session:
            return granted_values(session, worker_id)

    def grant(self, worker_id: int, name: str, value: int) -> None:
        now = datetime.now(UTC)
        with transaction(self._sessions) as session:
            qualification_id, _ = create_qualification(session, name, now=now)
            grant(session, qualification_id, worker_id, int(value), now=now)
            calls = pending_worker_calls(session, worker_id)
        self._sent(calls)

    def count_unit(self, worker_id: int, name: str, unit_id: int) -> bool:
        now = datetime.now(UTC)
        with transaction(self._sessions) as session:
            qualification_id, _ = create_qualification(session, name, now=now)
            counted = count_unit(session, unit_id, qualification_id, worker_id, now=now)
            calls = pending_worker_calls(session, worker_id) if counted else []
        self._sent(calls)
        return counted

    def revoke(self, worker_id: int, name: str) -> None:
        with transaction(self._sessions) as session:
            found = session.scalar(select(Qualification.id).where(Qualification.name == name))
            if found is not None:
                revoke(session, found, worker_id)
            calls = pending_worker_calls(session, worker_id)
        self._sent(calls)

    def _sent(self, call_ids: list[int]) -> None:
        if self._send is None:
            return
        for call_id in call_ids:
            try:
                self._send(call_id)
            except ServiceError as error:
                log.warning("provider call %s not sent now (%s): beat re-sends it", call_id, error)
                return
