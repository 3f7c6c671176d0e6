"""The accounts of a run, as a requester reconciling payments needs them: per unit, the decision (and its
reason) and what the provider was asked to pay and did pay, from the review ledger (``unit_review``) and
the provider-call ledger (``provider_call``); per run, the totals with the provider's fees.

A unit's reward is paid by its approval (a soft rejection approves too, as in Mephisto), never by a
rejection; a bonus is paid by its own call. "Paid" means the provider confirmed the call; a call not yet
made, or one that failed every attempt (``review resend``), is pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import ProviderCall, Task, TaskRun, Unit, UnitReview
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.providers import provider_class
from mephisto_dist.review.decisions import CallAction, CallStatus

_PAYING = (CallAction.APPROVE.value, CallAction.REJECT.value, CallAction.BONUS.value)


@dataclass(frozen=True)
class UnitAccount:
    """What one unit was decided and paid."""

    decision: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    reward_paid: float | None = None
    """The reward the provider paid: 0 when rejected (or never submitted), None while it is pending."""
    bonus_paid: float = 0.0
    bonus_pending: float = 0.0

    def record(self, reward: float, status: str) -> dict[str, Any]:
        """The export's ``review`` and ``payment`` sections."""
        review = None if self.decision is None else {
            "decision": self.decision, "reason": self.reason, "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at is not None else None}
        return {"review": review, "payment": {
            "reward": reward, "reward_paid": self.reward_paid, "bonus_paid": self.bonus_paid,
            "bonus_pending": self.bonus_pending, "reward_pending": self.reward_pending(reward, status)}}

    def reward_pending(self, reward: float, status: str) -> float:
        """The reward still owed: approved but not yet paid, or submitted and not yet reviewed."""
        if self.reward_paid is not None:
            return 0.0
        return reward if status in _OWED else 0.0


_OWED = {UnitStatus.COMPLETED.value, UnitStatus.ACCEPTED.value, UnitStatus.SOFT_REJECTED.value}
_UNPAID = {UnitStatus.EXPIRED.value, UnitStatus.REJECTED.value}


def unit_accounts(session: Session, units: Sequence[tuple[int, str, float]]) -> dict[int, UnitAccount]:
    """(unit id, status, reward) -> its account, in two queries for the whole page."""
    ids = [unit_id for unit_id, _, _ in units]
    if not ids:
        return {}
    latest: dict[int, UnitReview] = {}
    for review in session.scalars(select(UnitReview).where(UnitReview.unit_id.in_(ids)).order_by(UnitReview.id)):
        latest[review.unit_id] = review
    calls: dict[int, list[ProviderCall]] = {}
    for call in session.scalars(select(ProviderCall).where(ProviderCall.unit_id.in_(ids),
                                                           ProviderCall.action.in_(_PAYING))
                                .order_by(ProviderCall.id)):
        calls.setdefault(int(call.unit_id or 0), []).append(call)
    return {unit_id: _account(status, reward, latest.get(unit_id), calls.get(unit_id, []))
            for unit_id, status, reward in units}


def _account(status: str, reward: float, review: UnitReview | None, calls: Iterable[ProviderCall]) -> UnitAccount:
    paid: float | None = 0.0 if status in _UNPAID else None
    bonus_paid = bonus_pending = 0.0
    for call in calls:
        done = call.status == CallStatus.DONE.value
        if call.action == CallAction.BONUS.value:
            if done:
                bonus_paid += call.amount or 0.0
            elif call.status != CallStatus.SKIPPED.value:
                bonus_pending += call.amount or 0.0
        elif call.action == CallAction.APPROVE.value and done and status in _OWED:
            paid = reward
    if review is None:
        return UnitAccount(reward_paid=paid, bonus_paid=round(bonus_paid, 2), bonus_pending=round(bonus_pending, 2))
    return UnitAccount(review.status, review.note, review.created_at, review.decided_by, paid,
                       round(bonus_paid, 2), round(bonus_pending, 2))


@dataclass
class RunCosts:
    """A run's money so far, and what its provider charges on top (its fee rate)."""

    run_id: int
    task_name: str
    provider_type: str
    units: dict[str, int] = field(default_factory=dict)
    rewards_paid: float = 0.0
    rewards_pending: float = 0.0
    bonuses_paid: float = 0.0
    bonuses_pending: float = 0.0
    fee_rate: float = 0.0
    sandbox: bool = False

    @property
    def fees_paid(self) -> float:
        return round((self.rewards_paid + self.bonuses_paid) * self.fee_rate, 2)

    @property
    def fees_pending(self) -> float:
        return round((self.rewards_pending + self.bonuses_pending) * self.fee_rate, 2)

    @property
    def total_paid(self) -> float:
        return round(self.rewards_paid + self.bonuses_paid + self.fees_paid, 2)

    @property
    def total_pending(self) -> float:
        return round(self.rewards_pending + self.bonuses_pending + self.fees_pending, 2)


def run_costs(session: Session, run_ids: Sequence[int]) -> list[RunCosts]:
    """Each run's units per status and its payments, paid and pending, with the provider's fees."""
    out: list[RunCosts] = []
    for run_id in run_ids:
        found = session.execute(select(TaskRun.provider_type, Task.task_name)
                                .join(Task, Task.id == TaskRun.task_id).where(TaskRun.id == run_id)).first()
        if found is None:
            continue
        provider_type, task_name = found
        kind = provider_class(provider_type)
        costs = RunCosts(run_id, task_name, provider_type, fee_rate=kind.fee_rate, sandbox=kind.is_sandbox)
        counts: Mapping[str, int] = {status: int(n) for status, n in session.execute(
            select(Unit.status, func.count()).where(Unit.task_run_id == run_id).group_by(Unit.status))}
        costs.units = {status: counts.get(status, 0) for status in (s.value for s in UnitStatus)
                       if counts.get(status, 0)}
        last = 0
        while True:
            page = session.execute(select(Unit.id, Unit.status, Unit.pay_amount)
                                   .where(Unit.task_run_id == run_id, Unit.id > last,
                                          Unit.status.in_([*_OWED, *_UNPAID]))
                                   .order_by(Unit.id).limit(500)).all()
            if not page:
                break
            accounts = unit_accounts(session, [(unit_id, status, float(reward or 0.0))
                                               for unit_id, status, reward in page])
            for unit_id, status, reward in page:
                account = accounts[unit_id]
                costs.rewards_paid += account.reward_paid or 0.0
                costs.rewards_pending += account.reward_pending(float(reward or 0.0), status)
                costs.bonuses_paid += account.bonus_paid
                costs.bonuses_pending += account.bonus_pending
            last = int(page[-1][0])
        for name in ("rewards_paid", "rewards_pending", "bonuses_paid", "bonuses_pending"):
            setattr(costs, name, round(getattr(costs, name), 2))
        out.append(costs)
    return out


def costs_of(sessions: sessionmaker[Session], *, task_name: str | None, run_id: int | None) -> list[RunCosts]:
    """The costs of one run, or of every run of a task_name (``mephisto-dist costs``)."""
    from mephisto_dist.review.export import resolve_runs

    with read_transaction(sessions) as session:
        return run_costs(session, resolve_runs(session, task_name=task_name, run_id=run_id))
