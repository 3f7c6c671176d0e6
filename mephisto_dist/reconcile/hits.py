"""Orphaned HITs and the provider against the database, for one requester account at a time.

One pass lists every HIT of the account (ListHITs, every page), keeps those carrying this deployment's
mark, and decides with ``domain.hits`` what to expire or delete; it also records assignments the
provider holds as submitted that never reached us (``ProviderSubmission``, flagged for review). HITs
are not database rows, so the batch lock is a Redis lease per requester account: a second pass at the same
moment finds it held and does nothing; a later one sees what the first did. The pass renews the lease as it
goes, so one killed mid-pass holds the account for ``LEASE_S`` at most.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, ProviderSubmission, Requester, TaskRun, Unit
from mephisto_dist.domain.hits import (
    HitAction,
    HitDecision,
    HitFacts,
    UnitState,
    decide_hit,
    needs_review_count,
)
from mephisto_dist.domain.status import UNIT_FINAL, UNIT_SUBMITTED, UnitStatus
from mephisto_dist.errors import MephistoDistError
from mephisto_dist.heartbeats.keys import reconcile_lock_key
from mephisto_dist.providers.mturk.mapping import HitMark, parse_annotation
from mephisto_dist.providers.mturk.provider import MTurkProvider, ProviderCallFailed
from mephisto_dist.reconcile import records

log = logging.getLogger(__name__)
NAME = "hits"
# The account's lock is a lease: a pass renews it as it goes (at most every third of it), so a worker killed
# mid-pass keeps the account from the next pass for LEASE_S at most, however long a live pass runs.
LEASE_S = 30.0
LAUNCH_SETTLE_S = 60  # a HIT made this recently may not be listed yet
REVIEWED_FINAL = frozenset({*UNIT_FINAL, UnitStatus.REJECTED})
GONE_CODES = ("AWS.MechanicalTurk.HITDoesNotExist",)


@dataclass(frozen=True)
class ListedHit:
    """A HIT as the provider lists it, its mark (None: another tool's), and the decision's facts."""

    hit: dict[str, Any]
    mark: HitMark | None
    facts: HitFacts

    @property
    def hit_id(self) -> str:
        return str(self.hit["HITId"])


def _unit_state(unit: tuple[int, str, str | None] | None, hit_id: str) -> UnitState:
    if unit is None:
        return UnitState.UNKNOWN
    _, status, provider_unit_id = unit
    if provider_unit_id is not None and provider_unit_id != hit_id:
        return UnitState.ELSEWHERE
    return UnitState.FINAL if UnitStatus(status) in REVIEWED_FINAL else UnitState.ACTIVE


def _nothing() -> None:
    pass


class Lease:
    """The per-account lock of a HIT pass, renewed by ``keep`` between provider calls."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.lock = client.lock(reconcile_lock_key(name), timeout=LEASE_S, blocking=False)
        self.renewed = 0.0

    def acquire(self) -> bool:
        self.renewed = time.monotonic()
        return bool(self.lock.acquire(token=uuid.uuid4().hex))

    def keep(self) -> None:
        """Renew the lease when a third of it has gone; LeaseLost when another pass has it now."""
        if time.monotonic() - self.renewed < LEASE_S / 3:
            return
        try:
            self.lock.reacquire()
        except redis.exceptions.LockError as lost:
            raise LeaseLost(str(self.lock.name)) from lost
        self.renewed = time.monotonic()

    def release(self) -> None:
        with suppress(redis.exceptions.LockError):  # it ran out; the pass that has it now does no harm
            self.lock.release()


class LeaseLost(Exception):
    """A pass ran longer than its lease between two renewals, and another pass may hold the account."""


def survey(factory: sessionmaker[Session], provider: MTurkProvider, *, now: datetime,
           keep: Callable[[], None] = _nothing) -> list[ListedHit]:
    """Every HIT of the account with what the database says of its run and unit."""
    hits = []
    for listed_hit in provider.pages("ListHITs", "HITs", MaxResults=100):
        hits.append(listed_hit)
        keep()
    marks = {str(h["HITId"]): parse_annotation(h.get("RequesterAnnotation")) for h in hits}
    ours = {hit_id: mark for hit_id, mark in marks.items()
            if mark is not None and mark.deployment == provider.deployment}
    with transaction(factory) as session:
        runs = {run_id: completed for run_id, completed in session.execute(
            select(TaskRun.id, TaskRun.is_completed).where(TaskRun.id.in_({m.run_id for m in ours.values()})))}
        units = {unit_id: (unit_id, status, hit_id) for unit_id, status, hit_id in session.execute(
            select(Unit.id, Unit.status, Unit.provider_unit_id).where(
                Unit.id.in_({m.unit_id for m in ours.values()})))}
    listed = []
    for hit in hits:
        hit_id = str(hit["HITId"])
        mark = ours.get(hit_id)
        run_state = "unknown" if mark is None or mark.run_id not in runs else (
            "finished" if runs[mark.run_id] else "live")
        unit = units.get(mark.unit_id) if mark else None
        unit_state = _unit_state(unit, hit_id)
        facts = HitFacts(
            hit_id=hit_id, ours=mark is not None, run_state=run_state, unit_state=unit_state,
            expired=hit["Expiration"] <= now, hit_status=str(hit.get("HITStatus")),
            pending=int(hit.get("NumberOfAssignmentsPending") or 0), unreviewed=None,
            unit_status=unit[1] if unit is not None and unit_state != UnitState.ELSEWHERE else None)
        if needs_review_count(facts):
            keep()
            submitted = list(provider.pages("ListAssignmentsForHIT", "Assignments", HITId=hit_id,
                                            AssignmentStatuses=["Submitted"]))
            facts = HitFacts(**{**facts.__dict__, "unreviewed": len(submitted)})
        listed.append(ListedHit(hit, marks[hit_id], facts))
    return listed


def reconcile_hits(factory: sessionmaker[Session], client: redis.Redis, provider: MTurkProvider, *,
                   now: datetime) -> list[HitDecision]:
    """One pass over one requester's account; nothing when another pass holds it. A pass that loses its
    lease (it stalled for longer than LEASE_S) stops where it is; the next pass starts over."""
    access = provider.access
    lease = Lease(client, f"hits:{access.provider_type}:{access.requester_name}")
    if not lease.acquire():
        return []
    decisions: list[HitDecision] = []
    try:
        listed = survey(factory, provider, now=now, keep=lease.keep)
        record_unreceived_submissions(factory, provider, listed, now=now, keep=lease.keep)
        relaunch_unhosted_units(factory, provider, listed, now=now, keep=lease.keep)
        runs = {item.hit_id: item.mark.run_id if item.mark else None for item in listed}
        for decision in (d for d in (decide_hit(item.facts) for item in listed) if d is not None):
            lease.keep()
            apply_decision(factory, provider, decision, runs[decision.hit_id], now=now)
            decisions.append(decision)
    except LeaseLost:
        log.warning("the HIT pass over %s stalled past its %.0f s lease; it stopped after %d decision(s)",
                    access.requester_name, LEASE_S, len(decisions))
    finally:
        lease.release()
    return decisions


def apply_decision(factory: sessionmaker[Session], provider: MTurkProvider, decision: HitDecision,
                   run_id: int | None, *, now: datetime, reconciler: str = NAME) -> bool:
    """Expire or delete the HIT and record it (``reconciler``: who did it); True when it is done. A HIT
    already gone counts as done."""
    error: str | None = None
    try:
        if decision.action == HitAction.EXPIRE:
            provider.unpublish_units([decision.hit_id])
        else:
            provider.call("DeleteHIT", HITId=decision.hit_id)
    except ProviderCallFailed as failed:
        if failed.turk_code not in GONE_CODES:
            error = str(failed)
    with transaction(factory) as session:
        record_id = records.record(session, reconciler, f"HIT {decision.hit_id} ({provider.access.requester_name})",
                                   decision.found, decision.action.value, task_run_id=run_id, now=now,
                                   done=error is None)
        if error is not None:
            records.mark_done(session, record_id, now=now, error=error)
    if error is not None:
        log.warning("HIT %s: %s failed: %s", decision.hit_id, decision.action.value, error)
    return error is None


def _known_assignments(session: Session, unit_ids: Sequence[int]) -> set[str]:
    """Assignment ids whose submission reached us (an agent of the unit submitted with it)."""
    known: set[str] = set()
    for provider_data, in session.execute(select(Agent.provider_data).where(
            Agent.unit_id.in_(unit_ids), Agent.submitted_at.is_not(None))):
        if isinstance(provider_data, dict) and provider_data.get("assignment_id"):
            known.add(str(provider_data["assignment_id"]))
    return known


def record_unreceived_submissions(factory: sessionmaker[Session], provider: MTurkProvider,
                                  listed: Sequence[ListedHit], *, now: datetime,
                                  keep: Callable[[], None] = _nothing) -> int:
    """Assignments MTurk holds as submitted for our HITs that never reached us: stored with MTurk's answer
    and flagged for review. A unit we hold as submitted is skipped (its submission reached us)."""
    candidates = [item for item in listed if item.mark is not None
                  and int(item.hit.get("NumberOfAssignmentsCompleted") or 0) > 0]
    if not candidates:
        return 0
    with transaction(factory) as session:
        statuses = {unit_id: status for unit_id, status in session.execute(select(Unit.id, Unit.status).where(
            Unit.id.in_({c.mark.unit_id for c in candidates if c.mark})))}
        seen = set(session.scalars(select(ProviderSubmission.assignment_id).where(
            ProviderSubmission.hit_id.in_([c.hit_id for c in candidates]))))
        known = _known_assignments(session, list(statuses))
    added = 0
    for item in candidates:
        assert item.mark is not None
        status = statuses.get(item.mark.unit_id)
        if status is not None and UnitStatus(status) in UNIT_SUBMITTED:
            continue
        keep()
        for assignment in provider.pages("ListAssignmentsForHIT", "Assignments", HITId=item.hit_id,
                                         AssignmentStatuses=["Submitted", "Approved", "Rejected"]):
            assignment_id = str(assignment["AssignmentId"])
            if assignment_id in seen or assignment_id in known:
                continue
            added += _record_submission(factory, provider, item, assignment, unit_known=status is not None,
                                        now=now)
    return added


def _record_submission(factory: sessionmaker[Session], provider: MTurkProvider, item: ListedHit,
                       assignment: dict[str, Any], *, unit_known: bool, now: datetime) -> int:
    assert item.mark is not None
    run_id = item.mark.run_id if unit_known else None
    try:
        with transaction(factory) as session:
            session.add(ProviderSubmission(
                provider_type=provider.provider_type, requester_name=provider.access.requester_name,
                hit_id=item.hit_id, assignment_id=str(assignment["AssignmentId"]),
                worker_name=str(assignment["WorkerId"]), task_run_id=run_id,
                unit_id=item.mark.unit_id if unit_known else None, answer=assignment.get("Answer"),
                provider_status=str(assignment.get("AssignmentStatus")), submitted_at=assignment.get("SubmitTime"),
                created_at=now))
            session.flush()
            records.record(session, "provider", f"assignment {assignment['AssignmentId']} of HIT {item.hit_id}",
                           "submitted on MTurk, never reached us", "recorded for review",
                           task_run_id=item.mark.run_id, now=now, done=True)
    except IntegrityError:  # another pass recorded it first
        return 0
    return 1


def relaunch_unhosted_units(factory: sessionmaker[Session], provider: MTurkProvider, listed: Sequence[ListedHit],
                            *, now: datetime, keep: Callable[[], None] = _nothing) -> int:
    """Units of this requester's open runs we hold as launched whose HIT the provider no longer has (it
    was deleted by hand or by another tool): each gets a new HIT, its token derived from the lost HIT so
    that a repeated pass finds the same new HIT."""
    hosted = {item.hit_id for item in listed}
    access = provider.access
    with transaction(factory) as session:
        rows = session.execute(
            select(Unit.id, Unit.task_run_id, Unit.provider_unit_id, TaskRun.server_url, TaskRun.config)
            .join(TaskRun, TaskRun.id == Unit.task_run_id).join(Requester, Requester.id == TaskRun.requester_id)
            .where(Unit.status == UnitStatus.LAUNCHED.value, Unit.provider_unit_id.is_not(None),
                   Unit.launched_at < now - timedelta(seconds=LAUNCH_SETTLE_S), TaskRun.is_completed.is_(False),
                   TaskRun.shutdown_requested_at.is_(None), Requester.provider_type == access.provider_type,
                   Requester.requester_name == access.requester_name)).all()
    relaunched = 0
    for unit_id, run_id, old_hit, server_url, config in rows:
        keep()
        if old_hit in hosted or _still_there(provider, str(old_hit)):
            continue
        token = f"{provider.deployment}-{run_id}-{unit_id}-after-{old_hit}"
        (published,) = provider.publish_units(run_id, [unit_id], server_url or "", RunConfig.parse(config).task.args,
                                              tokens={unit_id: token})
        with transaction(factory) as session:
            moved = session.connection().execute(
                update(Unit).where(Unit.id == unit_id, Unit.status == UnitStatus.LAUNCHED.value,
                                   Unit.provider_unit_id == old_hit)
                .values(provider_unit_id=published.provider_unit_id)).rowcount
            if moved:
                records.record(session, "provider", f"unit {unit_id} (HIT {old_hit})",
                               f"launched here but its HIT is gone from the provider; new HIT "
                               f"{published.provider_unit_id}", "relaunched", task_run_id=run_id, now=now,
                               done=True)
                relaunched += 1
    return relaunched


def _still_there(provider: MTurkProvider, hit_id: str) -> bool:
    """ListHITs may lag behind a HIT just made; ask for the HIT itself before deciding it is gone."""
    try:
        return bool(provider.call("GetHIT", HITId=hit_id)["HIT"].get("HITStatus") != "Disposed")
    except ProviderCallFailed as failed:
        if failed.turk_code in GONE_CODES or "does not exist" in failed.mturk_message.lower():
            return False
        raise


def requester_providers(factory: sessionmaker[Session], deployment: str) -> list[MTurkProvider]:
    """One provider per registered MTurk requester account, marked with this deployment."""
    from mephisto_dist.providers import provider_class
    from mephisto_dist.providers.requesters import list_requesters

    with transaction(factory) as session:
        registered = list_requesters(session)
    providers = []
    for requester in registered:
        cls = provider_class(requester.provider_type)
        if issubclass(cls, MTurkProvider):
            providers.append(cls({**requester.access().as_args(), "deployment": deployment}))
    return providers


def reconcile_all(factory: sessionmaker[Session], client: redis.Redis, deployment: str, *,
                  now: datetime) -> list[HitDecision]:
    decided: list[HitDecision] = []
    for provider in requester_providers(factory, deployment):
        try:
            decided += reconcile_hits(factory, client, provider, now=now)
        except MephistoDistError as error:  # this account is unreachable or misconfigured; others go on
            log.warning("cannot reconcile the HITs of %s: %s", provider.access.requester_name, error)
    return decided
