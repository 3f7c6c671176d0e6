"""Reviewing submitted units (approve, soft reject, reject, bonus) and the ledger of the crowd-provider
calls those decisions cause.

A decision moves the unit and its agent with compare-and-set writes (``db.transitions``), so of two
reviewers deciding one unit at once exactly one wins and the other gets :class:`AlreadyDecided`. In the
same transaction it writes a ``UnitReview`` and one ``ProviderCall`` row per side effect. After the
commit, each call is carried out by :func:`perform_call` (a Celery task, ``mephisto_dist.celery.review_tasks``), which
claims the row before calling the provider: a re-delivered task, or a command run twice, pays once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import (
    Agent,
    Assignment,
    GrantedQualification,
    ProviderCall,
    Qualification,
    TaskRun,
    Unit,
    UnitReview,
    Worker,
)
from mephisto_dist.db.transitions import move_agent, move_unit
from mephisto_dist.domain.launch import retry_delay_s
from mephisto_dist.domain.status import UNIT_SUBMITTED, AgentStatus, UnitStatus
from mephisto_dist.errors import ConfigError, MephistoDistError, NotFoundError, ServiceError
from mephisto_dist.metrics import record_provider_call
from mephisto_dist.providers import CrowdProvider, SubmittedWork, make_provider, provider_class

CLAIM_STALE_AFTER_S = 300.0
"""A claimed call not finished after this long is presumed abandoned by a dead process and re-claimable."""
MAX_ERROR_CHARS = 2000


class ReviewError(MephistoDistError):
    """A review decision that cannot be made as asked (missing reason, bad bonus, ...)."""


class NotReviewable(ReviewError):
    """The unit is not in a status this decision applies to."""


class AlreadyDecided(ReviewError):
    """Another reviewer decided the unit between our read and our write."""


class CallInFlight(MephistoDistError):
    """Another process has claimed this provider call and may be making it right now."""


class Decision(StrEnum):
    APPROVE = "approve"
    SOFT_REJECT = "soft_reject"
    REJECT = "reject"


class CallAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    BONUS = "bonus"
    BLOCK = "block"
    UNBLOCK = "unblock"
    # A worker's standing on one qualification, copied to the provider as it is when the call runs.
    SYNC_QUALIFICATION = "sync_qual"
    NOTIFY = "notify"


class CallStatus(StrEnum):
    """A ledger row: pending -> claimed -> done; a block lifted before its call ran is skipped; a call
    that failed every attempt is failed (``review resend`` makes it pending again)."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class _Rule:
    unit_from: tuple[UnitStatus, ...]
    unit_to: UnitStatus
    agent_from: tuple[AgentStatus, ...]
    agent_to: AgentStatus
    provider_action: CallAction


U, A = UnitStatus, AgentStatus
_RULES = {
    # Mephisto: a rejection can be overridden by a later approval; the provider is asked to approve.
    Decision.APPROVE: _Rule((U.COMPLETED, U.REJECTED), U.ACCEPTED, (A.COMPLETED, A.REJECTED), A.APPROVED,
                            CallAction.APPROVE),
    # Soft rejection pays the worker (so it is an approval on the provider) but marks the work as poor.
    Decision.SOFT_REJECT: _Rule((U.COMPLETED,), U.SOFT_REJECTED, (A.COMPLETED,), A.SOFT_REJECTED,
                                CallAction.APPROVE),
    Decision.REJECT: _Rule((U.COMPLETED,), U.REJECTED, (A.COMPLETED,), A.REJECTED, CallAction.REJECT),
}


def parse_bonus(text: str) -> float:
    """A bonus in dollars: positive, at most two decimals (what providers accept)."""
    try:
        amount = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise ReviewError(f"bonus {text!r} is not an amount in dollars") from None
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        raise ReviewError(f"bonus {text!r} must be a positive amount with at most two decimals")
    return float(amount)


@dataclass(frozen=True)
class Reviewed:
    unit_id: int
    worker_id: int
    status: UnitStatus
    review_id: int
    bonus: float | None
    call_ids: tuple[int, ...]


def check_decision(decision: Decision, note: str | None, bonus: float | None) -> None:
    """Refuse a decision that is wrong whatever the unit: before anything is written."""
    if decision == Decision.REJECT and not (note and note.strip()):
        raise ReviewError("a rejection needs a reason: the worker is shown it")
    if bonus is not None:
        if decision != Decision.APPROVE:
            raise ReviewError("a bonus can only be paid with an approval")
        if not math.isfinite(bonus) or bonus <= 0:
            raise ReviewError(f"bonus {bonus!r} must be a positive amount")
        if not (note and note.strip()):
            raise ReviewError("a bonus needs a reason: the provider shows it to the worker")


def check_reviewable(session: Session, unit_ids: Sequence[int], decision: Decision) -> dict[int, UnitStatus]:
    """A one-line error naming the first unit that is missing or not in a status ``decision`` applies to;
    else each unit's status as this transaction sees it."""
    rule = _RULES[decision]
    rows = session.execute(select(Unit.id, Unit.status).where(Unit.id.in_(list(unit_ids))))
    found = {unit_id: status for unit_id, status in rows}
    for unit_id in unit_ids:
        status = found.get(unit_id)
        if status is None:
            raise NotFoundError(f"unit {unit_id} does not exist")
        if UnitStatus(status) not in rule.unit_from:
            allowed = " or ".join(s.value for s in rule.unit_from)
            raise NotReviewable(f"unit {unit_id} is {status}; only {allowed} units can be given "
                                f"'{decision.value}'")
    return {unit_id: UnitStatus(status) for unit_id, status in found.items()}


def decide(
    session: Session, unit_id: int, decision: Decision, *, now: datetime,
    note: str | None = None, bonus: float | None = None, by: str | None = None,
    only_from: Collection[UnitStatus] | None = None,
) -> Reviewed:
    """Apply one decision inside the caller's transaction (nothing is sent anywhere: after the commit,
    hand the returned ``call_ids`` to :func:`perform_call`). With ``only_from``, a unit in another status
    (decided by someone else since the caller chose it) is :class:`AlreadyDecided`, never overridden."""
    check_decision(decision, note, bonus)
    seen = check_reviewable(session, [unit_id], decision)[unit_id]
    if only_from is not None and seen not in only_from:
        raise AlreadyDecided(f"unit {unit_id} was decided by someone else meanwhile (it is {seen.value})")
    rule = _RULES[decision]
    row = session.execute(
        select(Unit.worker_id, Unit.agent_id, Unit.task_run_id, Unit.provider_unit_id, Worker.worker_name,
               TaskRun.provider_type, TaskRun.config)
        .join(TaskRun, TaskRun.id == Unit.task_run_id)
        .outerjoin(Worker, Worker.id == Unit.worker_id)
        .where(Unit.id == unit_id)
    ).one()
    worker_id, agent_id, run_id, provider_unit_id, worker_name, provider_type, config = row
    if worker_id is None or agent_id is None:
        raise NotReviewable(f"unit {unit_id} has no worker's submission to review")
    if seen == UnitStatus.REJECTED and not provider_class(provider_type).overrides_rejections:
        raise NotReviewable(f"unit {unit_id} was rejected on {provider_type}, where a rejection is final: it "
                            "cannot be approved now")
    # From the status this reviewer saw, not any status the rule allows: a rejection committed by
    # someone else a moment ago must not be silently overridden by an approval decided on "completed".
    if not move_unit(session, unit_id, seen, rule.unit_to, now=now):
        current = session.scalar(select(Unit.status).where(Unit.id == unit_id))
        raise AlreadyDecided(f"unit {unit_id} was decided by someone else just now (it is {current} now)")
    if not move_agent(session, agent_id, rule.agent_from, rule.agent_to, now=now):
        current = session.scalar(select(Agent.status).where(Agent.id == agent_id))
        raise AlreadyDecided(f"unit {unit_id}'s agent was decided by someone else just now ({current})")
    review = UnitReview(unit_id=unit_id, worker_id=worker_id, task_run_id=run_id, status=rule.unit_to.value,
                        note=note, bonus=bonus, created_at=now, decided_by=by)
    session.add(review)
    session.flush()
    provider_data = session.scalar(select(Agent.provider_data).where(Agent.id == agent_id)) or {}
    payload = {"worker_name": worker_name, "provider_unit_id": provider_unit_id,
               "provider_data": provider_data, "provider_args": dict(RunConfig.parse(config).provider.args)}
    common: dict[str, Any] = {"provider_type": provider_type, "worker_id": worker_id, "task_run_id": run_id,
                              "unit_id": unit_id, "unit_review_id": review.id, "payload": payload, "now": now}
    # Approval and rejection happen once per unit (accepted is final; a rejection is only made from
    # completed), so the unit id alone keys them; a bonus is keyed by the review that granted it.
    calls = [record_call(session, rule.provider_action, f"{rule.provider_action.value}:{unit_id}",
                         reason=note, **common)]
    if bonus is not None:
        calls.append(record_call(session, CallAction.BONUS, f"bonus:{unit_id}:{review.id}",
                                 amount=bonus, reason=note, **common))
    return Reviewed(unit_id, worker_id, rule.unit_to, review.id, bonus, tuple(calls))


def record_call(
    session: Session, action: CallAction, idempotency_key: str, *, provider_type: str, worker_id: int,
    now: datetime, task_run_id: int | None = None, unit_id: int | None = None,
    unit_review_id: int | None = None, amount: float | None = None, reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> int:
    """Add a pending provider call; a key already in the ledger returns that call's id instead."""
    try:
        with session.begin_nested():
            call = ProviderCall(
                idempotency_key=idempotency_key, action=action.value, provider_type=provider_type,
                worker_id=worker_id, task_run_id=task_run_id, unit_id=unit_id, unit_review_id=unit_review_id,
                amount=amount, reason=reason, payload=dict(payload or {}), status=CallStatus.PENDING.value,
                attempts=0, created_at=now,
            )
            session.add(call)
        return call.id
    except IntegrityError:
        found = session.scalar(select(ProviderCall.id).where(ProviderCall.idempotency_key == idempotency_key))
        if found is None:
            raise
        return int(found)


# -- carrying out provider calls ---------------------------------------------------------------------


ProviderFactory = Callable[[str, Mapping[str, Any]], CrowdProvider]


@dataclass(frozen=True)
class _ClaimedCall:
    id: int
    action: CallAction
    key: str
    provider_type: str
    attempt: int
    unit_review_id: int | None
    amount: float | None
    reason: str
    payload: Mapping[str, Any]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def perform_call(
    factory: sessionmaker[Session], call_id: int, *, clock: Callable[[], datetime] = _utcnow,
    provider_for: ProviderFactory = make_provider, stale_after_s: float = CLAIM_STALE_AFTER_S,
    max_attempts: int = 5,
) -> CallStatus:
    """Carry out one ledger row at most once: claim it (committed), call the provider with the row's
    idempotency key, record the receipt. Returns the row's final status; raises :class:`CallInFlight`
    when another process holds a fresh claim and :class:`ServiceError` when the provider fails (the row
    goes back to pending, to be retried). The claim counts attempts across every re-send, so after
    ``max_attempts`` failures the row is failed for good, with the provider's message."""
    with transaction(factory) as session:
        claimed = _claim(session, call_id, now=clock(), stale_after_s=stale_after_s)
        if isinstance(claimed, CallStatus):
            return claimed
    try:
        receipt = _call_provider(provider_for(claimed.provider_type, claimed.payload.get("provider_args", {})),
                                 claimed)
    except Exception as error:
        record_provider_call(claimed.provider_type, claimed.action.value, "error")
        message = (str(error) if isinstance(error, MephistoDistError) else f"{type(error).__name__}: {error}")
        given_up = claimed.attempt >= max_attempts
        with transaction(factory) as session:
            _release(session, claimed, message[:MAX_ERROR_CHARS], failed=given_up, now=clock())
        if given_up:
            return CallStatus.FAILED
        raise ServiceError(f"{claimed.provider_type} {claimed.action.value} ({claimed.key}) failed: {error}") \
            from error
    record_provider_call(claimed.provider_type, claimed.action.value, "ok")
    with transaction(factory) as session:
        now = clock()
        session.execute(
            update(ProviderCall)
            .where(ProviderCall.id == claimed.id, ProviderCall.status == CallStatus.CLAIMED.value,
                   ProviderCall.attempts == claimed.attempt)
            .values(status=CallStatus.DONE.value, receipt=receipt, done_at=now, last_error=None)
        )
        if claimed.action == CallAction.BONUS and claimed.unit_review_id is not None:
            session.execute(update(UnitReview).where(UnitReview.id == claimed.unit_review_id)
                            .values(bonus_paid_at=now))
    return CallStatus.DONE


def _claim(session: Session, call_id: int, *, now: datetime, stale_after_s: float) -> _ClaimedCall | CallStatus:
    stale = now - timedelta(seconds=stale_after_s)
    attempt = session.scalar(
        update(ProviderCall)
        .where(ProviderCall.id == call_id,
               or_(ProviderCall.status == CallStatus.PENDING.value,
                   and_(ProviderCall.status == CallStatus.CLAIMED.value, ProviderCall.claimed_at < stale)))
        .values(status=CallStatus.CLAIMED.value, claimed_at=now, attempts=ProviderCall.attempts + 1)
        .returning(ProviderCall.attempts)
    )
    call = session.get(ProviderCall, call_id)
    if call is None:
        raise NotFoundError(f"provider call {call_id} does not exist")
    if attempt is None:
        if call.status == CallStatus.CLAIMED.value:
            raise CallInFlight(f"provider call {call.idempotency_key} is being made by another process")
        return CallStatus(call.status)
    action = CallAction(call.action)
    if action in (CallAction.BLOCK, CallAction.UNBLOCK):
        # Block and unblock may be carried out out of order; only the one matching the worker's state
        # now is still wanted.
        blocked = session.scalar(select(Worker.is_blocked).where(Worker.id == call.worker_id))
        if bool(blocked) != (action == CallAction.BLOCK):
            call.status = CallStatus.SKIPPED.value
            call.done_at = now
            return CallStatus.SKIPPED
    payload = dict(call.payload)
    if action == CallAction.SYNC_QUALIFICATION:
        # Grants and revokes may be carried out out of order: each sends the standing as it is now.
        payload["value"] = session.scalar(
            select(GrantedQualification.value)
            .join(Qualification, Qualification.id == GrantedQualification.qualification_id)
            .where(GrantedQualification.worker_id == call.worker_id,
                   Qualification.name == payload.get("qualification_name")))
    return _ClaimedCall(call.id, action, call.idempotency_key, call.provider_type, int(attempt),
                        call.unit_review_id, call.amount, call.reason or "", payload)


def _call_provider(provider: CrowdProvider, call: _ClaimedCall) -> str:
    key = call.key
    payload = call.payload
    worker_name = str(payload.get("worker_name") or "")
    if call.action in (CallAction.SYNC_QUALIFICATION, CallAction.NOTIFY):
        return _call_worker_channel(provider, call, worker_name)
    if call.action == CallAction.BLOCK:
        return provider.block_worker(worker_name, call.reason, idempotency_key=key)
    if call.action == CallAction.UNBLOCK:
        return provider.unblock_worker(worker_name, call.reason, idempotency_key=key)
    work = SubmittedWork(worker_name, payload.get("provider_unit_id"), dict(payload.get("provider_data") or {}))
    if call.action == CallAction.APPROVE:
        return provider.approve_work(work, idempotency_key=key)
    if call.action == CallAction.REJECT:
        return provider.reject_work(work, call.reason, idempotency_key=key)
    if call.amount is None:
        raise ConfigError(f"bonus call {key} has no amount")
    return provider.pay_bonus(work, call.amount, call.reason, idempotency_key=key)


@runtime_checkable
class WorkerChannel(Protocol):
    """What a provider with its own qualifications and messages (MTurk) offers beyond the contract."""

    def grant_qualification(self, worker_name: str, qualification_name: str, value: int) -> str: ...
    def revoke_qualification(self, worker_name: str, qualification_name: str, reason: str) -> str: ...
    def notify_workers(self, worker_names: Sequence[str], subject: str, message: str) -> list[str]: ...


def _call_worker_channel(provider: CrowdProvider, call: _ClaimedCall, worker_name: str) -> str:
    if not isinstance(provider, WorkerChannel):
        return f"{provider.provider_type}:nothing to send"  # mock keeps qualifications only here
    payload = call.payload
    if call.action == CallAction.NOTIFY:
        failed = provider.notify_workers([worker_name], str(payload.get("subject")), str(payload.get("message")))
        if failed:
            raise ServiceError(f"{provider.provider_type} could not notify worker {worker_name}")
        return f"notified:{worker_name}"
    name = str(payload.get("qualification_name"))
    value = payload.get("value")
    if value is None:
        return provider.revoke_qualification(worker_name, name, call.reason)
    return provider.grant_qualification(worker_name, name, int(value))


def _release(session: Session, call: _ClaimedCall, error: str, *, failed: bool, now: datetime) -> None:
    # ``claimed_at`` stays: it is when the last attempt was made, from which the next one is due.
    session.execute(
        update(ProviderCall)
        .where(ProviderCall.id == call.id, ProviderCall.status == CallStatus.CLAIMED.value,
               ProviderCall.attempts == call.attempt)
        .values(status=(CallStatus.FAILED if failed else CallStatus.PENDING).value, last_error=error,
                done_at=now if failed else None)
    )


def unfinished_calls(
    session: Session, *, now: datetime, stale_after_s: float = CLAIM_STALE_AFTER_S,
    run_ids: Collection[int] | None = None, retry_base_s: float = 0.0,
) -> list[int]:
    """Calls never carried out (their enqueue failed, or the process making them died), and failed
    calls whose next attempt is due (``retry_base_s`` doubling with each attempt made)."""
    stale = now - timedelta(seconds=stale_after_s)
    query = select(ProviderCall.id, ProviderCall.attempts, ProviderCall.claimed_at, ProviderCall.status).where(or_(
        ProviderCall.status == CallStatus.PENDING.value,
        and_(ProviderCall.status == CallStatus.CLAIMED.value, ProviderCall.claimed_at < stale),
    ))
    if run_ids is not None:
        query = query.where(ProviderCall.task_run_id.in_(list(run_ids)))
    return [call_id for call_id, attempts, last_at, status in session.execute(query.order_by(ProviderCall.id))
            if status != CallStatus.PENDING.value or not attempts or last_at is None
            or last_at + timedelta(seconds=retry_delay_s(attempts, retry_base_s)) <= now]


def reset_failed_calls(session: Session, run_ids: Collection[int] | None) -> list[int]:
    """Make calls that failed every attempt pending again, with a fresh count; returns their ids (the
    caller enqueues them after the commit)."""
    query = select(ProviderCall.id).where(ProviderCall.status == CallStatus.FAILED.value)
    if run_ids is not None:
        query = query.where(ProviderCall.task_run_id.in_(list(run_ids)))
    call_ids = list(session.scalars(query))
    if call_ids:
        session.execute(update(ProviderCall).where(ProviderCall.id.in_(call_ids))
                        .values(status=CallStatus.PENDING.value, attempts=0, done_at=None))
    return call_ids


def failed_calls(session: Session, run_id: int) -> tuple[int, str | None]:
    """How many of the run's provider calls failed every attempt, and the latest error."""
    rows = session.execute(select(ProviderCall.last_error).where(
        ProviderCall.task_run_id == run_id, ProviderCall.status == CallStatus.FAILED.value)
        .order_by(ProviderCall.done_at.desc())).scalars().all()
    return len(rows), (rows[0] if rows else None)


def failed_call_summary(factory: sessionmaker[Session], run_id: int) -> tuple[int, str | None]:
    """:func:`failed_calls` in a transaction of its own."""
    with read_transaction(factory) as session:
        return failed_calls(session, run_id)


@dataclass(frozen=True)
class FailedCall:
    """A provider call that failed every attempt: it waits for ``review resend``."""

    call_id: int
    run_id: int | None
    unit_id: int | None
    action: str
    worker_name: str
    attempts: int
    error: str


def failed_call_details(session: Session, run_ids: Collection[int]) -> list[FailedCall]:
    rows = session.execute(
        select(ProviderCall.id, ProviderCall.task_run_id, ProviderCall.unit_id, ProviderCall.action,
               Worker.worker_name, ProviderCall.attempts, ProviderCall.last_error)
        .join(Worker, Worker.id == ProviderCall.worker_id)
        .where(ProviderCall.task_run_id.in_(list(run_ids)), ProviderCall.status == CallStatus.FAILED.value)
        .order_by(ProviderCall.id))
    return [FailedCall(int(call_id), run_id, unit_id, str(action), str(worker), int(attempts), error or "")
            for call_id, run_id, unit_id, action, worker, attempts, error in rows]


# -- what a reviewer looks at ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerHistory:
    worker_id: int
    worker_name: str
    provider_type: str
    submitted: int
    accepted: int
    rejected: int
    soft_rejected: int
    is_blocked: bool
    block_reason: str | None


def worker_histories(
    session: Session, *, task_id: int | None = None, worker_ids: Collection[int] | None = None,
) -> list[WorkerHistory]:
    """Per worker: units submitted and how they were judged, over one task or all of them. Without a
    task every worker is listed; with one, those who submitted a unit of it."""
    counts = (
        select(Unit.worker_id, Unit.status, func.count().label("n"))
        .where(Unit.worker_id.is_not(None), Unit.status.in_([s.value for s in UNIT_SUBMITTED]))
        .group_by(Unit.worker_id, Unit.status)
    )
    if task_id is not None:
        counts = counts.join(TaskRun, TaskRun.id == Unit.task_run_id).where(TaskRun.task_id == task_id)
    if worker_ids is not None:
        counts = counts.where(Unit.worker_id.in_(list(worker_ids)))
    by_worker: dict[int, dict[str, int]] = {}
    for worker_id, status, n in session.execute(counts):
        if worker_id is not None:
            by_worker.setdefault(worker_id, {})[status] = int(n)
    workers = select(Worker).order_by(Worker.worker_name, Worker.provider_type)
    if worker_ids is not None:
        workers = workers.where(Worker.id.in_(list(worker_ids)))
    elif task_id is not None:
        workers = workers.where(Worker.id.in_(list(by_worker)))
    histories = []
    for worker in session.scalars(workers):
        c = by_worker.get(worker.id, {})
        histories.append(WorkerHistory(
            worker.id, worker.worker_name, worker.provider_type, sum(c.values()),
            c.get(U.ACCEPTED.value, 0), c.get(U.REJECTED.value, 0), c.get(U.SOFT_REJECTED.value, 0),
            worker.is_blocked, worker.block_reason))
    return histories


@dataclass(frozen=True)
class UnitView:
    unit_id: int
    task_run_id: int
    status: str
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None = None
    """The worker's tips and feedback (``/submit_metadata``)."""


def completed_units_by_worker(session: Session, run_ids: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Each worker with completed units in the runs (by worker name), with those units' ids."""
    rows = session.execute(
        select(Unit.worker_id, Unit.id)
        .join(Worker, Worker.id == Unit.worker_id)
        .where(Unit.task_run_id.in_(list(run_ids)), Unit.status == U.COMPLETED.value)
        .order_by(Worker.worker_name, Worker.id, Unit.id)
    )
    grouped: dict[int, list[int]] = {}
    for worker_id, unit_id in rows:
        if worker_id is not None:
            grouped.setdefault(worker_id, []).append(unit_id)
    return list(grouped.items())


def unit_view(session: Session, unit_id: int) -> UnitView:
    row = session.execute(
        select(Unit.id, Unit.task_run_id, Unit.status, Assignment.data, Agent.outputs, Agent.task_metadata)
        .join(Assignment, Assignment.id == Unit.assignment_id)
        .outerjoin(Agent, Agent.id == Unit.agent_id)
        .where(Unit.id == unit_id)
    ).first()
    if row is None:
        raise NotFoundError(f"unit {unit_id} does not exist")
    return UnitView(int(row[0]), int(row[1]), str(row[2]), row[3] or {}, row[4], row[5])


def completed_unit_ids(session: Session, run_ids: Sequence[int], *, worker_id: int | None = None) -> list[int]:
    query = select(Unit.id).where(Unit.task_run_id.in_(list(run_ids)), Unit.status == U.COMPLETED.value)
    if worker_id is not None:
        query = query.where(Unit.worker_id == worker_id)
    return list(session.scalars(query.order_by(Unit.id)))


def unfinished_call_ids(factory: sessionmaker[Session], *, now: datetime, retry_base_s: float) -> list[int]:
    """:func:`unfinished_calls`, in a transaction of its own (beat's sweep)."""
    with transaction(factory) as session:
        return unfinished_calls(session, now=now, retry_base_s=retry_base_s)
