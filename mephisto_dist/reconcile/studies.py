"""Studies (a run on a study-based provider: Prolific) and the provider against the database, for one
requester account at a time.

One pass lists every study of the account, keeps those carrying this deployment's mark, and for each asks
its submissions and decides with ``domain.studies``: a study whose run is finished, being shut down or gone
is stopped; a live run's study gets the places its waiting units lack; a submission completed on the
provider that never reached us is recorded (``ProviderSubmission``, flagged for review, ``hits
unreceived``); the agents whose submission was returned or timed out are reported, for the caller to hand
their units back (``runs.returns``). The batch lock is the HIT pass's Redis lease per account
(``reconcile.hits.Lease``).

The database is read twice around the provider: the places are decided from what was read *before* (a unit
launched since has its place already, so nothing is added twice), a submission judged unreceived from what
is read *after* (a submission that reached us meanwhile is not taken for lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, ProviderSubmission, TaskRun, Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.domain.studies import (
    OPEN,
    RunState,
    StudyAction,
    StudyDecision,
    StudyFacts,
    SubmissionFacts,
    SubmissionVerdict,
    decide_study,
    judge_submission,
)
from mephisto_dist.errors import MephistoDistError
from mephisto_dist.providers import ListedStudy, RunsStudies, StudySubmission
from mephisto_dist.reconcile import records
from mephisto_dist.reconcile.hits import Lease, LeaseLost

log = logging.getLogger(__name__)
NAME = "studies"
RECENT_S = 7 * 24 * 3600.0
"""A finished run's study is asked for its submissions this long after the run ended (then it is left be)."""


@dataclass(frozen=True)
class StudyAccount:
    """One registered requester of a study-based provider, and its provider."""

    provider_type: str
    requester_name: str
    provider: RunsStudies

    @property
    def label(self) -> str:
        return f"{self.requester_name} ({self.provider_type})"


@dataclass(frozen=True)
class RunSnapshot:
    """What the database says of a study's run at one moment."""

    state: RunState
    completed_at: datetime | None = None
    waiting_units: int = 0
    # submission id -> (agent id, reached us, holds an assigned unit)
    agents: dict[str, tuple[str, bool, bool]] = field(default_factory=dict)


@dataclass
class StudyPass:
    """What one pass over an account decided and found."""

    decisions: list[StudyDecision] = field(default_factory=list)
    recorded: int = 0
    gave_up: dict[int, list[str]] = field(default_factory=dict)
    """Per run, the agents whose submission the provider says was returned or timed out."""


def snapshot(session: Session, run_id: int) -> RunSnapshot:
    run = session.execute(select(TaskRun.is_completed, TaskRun.shutdown_requested_at, TaskRun.completed_at)
                          .where(TaskRun.id == run_id)).first()
    if run is None:
        return RunSnapshot(RunState.UNKNOWN)
    state = (RunState.FINISHED if run.is_completed else
             RunState.STOPPING if run.shutdown_requested_at is not None else RunState.LIVE)
    waiting = int(session.scalar(select(func.count()).select_from(Unit).where(
        Unit.task_run_id == run_id, Unit.status == UnitStatus.LAUNCHED.value)) or 0)
    held = {agent_id for agent_id, in session.execute(select(Unit.agent_id).where(
        Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value, Unit.agent_id.is_not(None)))}
    agents: dict[str, tuple[str, bool, bool]] = {}
    for agent_id, provider_data, submitted_at in session.execute(
            select(Agent.id, Agent.provider_data, Agent.submitted_at).where(Agent.task_run_id == run_id)):
        submission_id = (provider_data or {}).get("assignment_id") if isinstance(provider_data, dict) else None
        if submission_id:
            reached, holds = submitted_at is not None, agent_id in held
            before = agents.get(str(submission_id))
            if before is not None:  # the same submission opened the page twice: any agent counts
                reached, holds = reached or before[1], holds or before[2]
            agents[str(submission_id)] = (agent_id if holds or before is None else before[0], reached, holds)
    return RunSnapshot(state, run.completed_at, waiting, agents)


def _read(factory: sessionmaker[Session], run_id: int) -> RunSnapshot:
    with transaction(factory) as session:
        return snapshot(session, run_id)


def study_facts(study: ListedStudy, before: RunSnapshot, submissions: Sequence[StudySubmission]) -> StudyFacts:
    in_progress = [s for s in submissions if s.status in ("ACTIVE", "RESERVED")]
    unmatched = sum(1 for s in in_progress if not any(before.agents.get(s.submission_id, ("", False, False))[1:]))
    return StudyFacts(study.study_id, ours=True, run_state=before.state, status=study.status,
                      total_places=study.total_places, places_taken=study.places_taken,
                      waiting_units=before.waiting_units, unmatched_starts=unmatched)


def _asks_submissions(study: ListedStudy, run: RunSnapshot, now: datetime) -> bool:
    """Whether the pass asks a study for its submissions (one call): not for the studies of runs long over."""
    if run.state in (RunState.LIVE, RunState.STOPPING) or study.status in OPEN:
        return True
    ended = run.completed_at or study.created_at
    return ended is None or ended >= now - timedelta(seconds=RECENT_S)


@dataclass(frozen=True)
class SurveyedStudy:
    """A study of the account and, for one of ours, the facts of its decision (None: another's)."""

    study: ListedStudy
    facts: StudyFacts | None


def survey_studies(factory: sessionmaker[Session], account: StudyAccount) -> list[SurveyedStudy]:
    """Every study of the account with what the database says of its run (``hits outstanding``,
    ``cleanup``); submissions are not asked, so the facts serve the stop decision only."""
    listed = []
    for study in account.provider.list_studies():
        if study.deployment != account.provider.deployment or study.run_id is None:
            listed.append(SurveyedStudy(study, None))
            continue
        listed.append(SurveyedStudy(study, study_facts(study, _read(factory, study.run_id), [])))
    return listed


def reconcile_studies(factory: sessionmaker[Session], client: redis.Redis, account: StudyAccount, *,
                      now: datetime) -> StudyPass:
    """One pass over one requester's account; nothing when another pass holds it."""
    lease = Lease(client, f"studies:{account.provider_type}:{account.requester_name}")
    done = StudyPass()
    if not lease.acquire():
        return done
    try:
        provider = account.provider
        ours = [s for s in provider.list_studies() if s.deployment == provider.deployment and s.run_id is not None]
        for study in ours:
            lease.keep()
            _one_study(factory, account, study, done, now=now)
    except LeaseLost:
        log.warning("the study pass over %s stalled past its lease; it stopped after %d decision(s)",
                    account.label, len(done.decisions))
    finally:
        lease.release()
    return done


def _one_study(factory: sessionmaker[Session], account: StudyAccount, study: ListedStudy, done: StudyPass, *,
               now: datetime) -> None:
    assert study.run_id is not None
    before = _read(factory, study.run_id)
    if not _asks_submissions(study, before, now):
        return
    submissions = account.provider.study_submissions(study.study_id)
    after = _read(factory, study.run_id)
    for submission in submissions:
        agent_id, reached, holds = after.agents.get(submission.submission_id, ("", False, False))
        verdict = judge_submission(SubmissionFacts(submission.submission_id, submission.status,
                                                   submission.completed_at, reached, holds), now=now)
        if verdict == SubmissionVerdict.UNRECEIVED:
            done.recorded += record_unreceived(factory, account, study, submission,
                                               run_known=after.state != RunState.UNKNOWN, now=now)
        elif verdict == SubmissionVerdict.GAVE_UP:
            done.gave_up.setdefault(study.run_id, []).append(agent_id)
    decision = decide_study(study_facts(study, before, submissions))
    if decision is not None and apply_decision(factory, account, decision, study.run_id, now=now):
        done.decisions.append(decision)


def apply_decision(factory: sessionmaker[Session], account: StudyAccount, decision: StudyDecision,
                   run_id: int | None, *, now: datetime, reconciler: str = NAME) -> bool:
    """Stop the study or add its places, and record it (``reconciler``: who did it); True when done."""
    error: str | None = None
    try:
        if decision.action == StudyAction.STOP:
            account.provider.stop_study(decision.study_id)
        else:
            account.provider.add_places(decision.study_id, decision.places)
    except MephistoDistError as failed:
        error = str(failed)
    action = decision.action.value + (f" ({decision.places})" if decision.action == StudyAction.ADD_PLACES else "")
    with transaction(factory) as session:
        record_id = records.record(session, reconciler, f"study {decision.study_id} ({account.requester_name})",
                                   decision.found, action, task_run_id=run_id, now=now, done=error is None)
        if error is not None:
            records.mark_done(session, record_id, now=now, error=error)
    if error is not None:
        log.warning("study %s: %s failed: %s", decision.study_id, action, error)
    return error is None


def record_unreceived(factory: sessionmaker[Session], account: StudyAccount, study: ListedStudy,
                      submission: StudySubmission, *, run_known: bool, now: datetime) -> int:
    """Store a submission completed on the provider that never reached us, flagged for review; 1 when this
    call stored it (0: recorded already)."""
    with transaction(factory) as session:
        if session.scalar(select(ProviderSubmission.id).where(
                ProviderSubmission.assignment_id == submission.submission_id)) is not None:
            return 0
    try:
        with transaction(factory) as session:
            session.add(ProviderSubmission(
                provider_type=account.provider_type, requester_name=account.requester_name, hit_id=study.study_id,
                assignment_id=submission.submission_id, worker_name=submission.participant_id,
                task_run_id=study.run_id if run_known else None, unit_id=None, answer=None,
                provider_status=submission.status, submitted_at=submission.completed_at, created_at=now))
            session.flush()
            records.record(session, "provider", f"submission {submission.submission_id} of study {study.study_id}",
                           f"completed on {account.provider_type}, never reached us", "recorded for review",
                           task_run_id=study.run_id, now=now, done=True)
    except IntegrityError:  # another pass recorded it first
        return 0
    return 1


def study_accounts(factory: sessionmaker[Session], deployment: str,
                   where: Callable[[str], bool] | None = None) -> list[StudyAccount]:
    """One account per registered requester of a study-based provider (``where``: of these names only)."""
    from mephisto_dist.providers import provider_class
    from mephisto_dist.providers.requesters import list_requesters

    with transaction(factory) as session:
        registered = list_requesters(session)
    accounts = []
    for requester in registered:
        cls = provider_class(requester.provider_type)
        if not cls.is_study_based or (where is not None and not where(requester.requester_name)):
            continue
        provider = cls.from_args({**requester.access_args(), "deployment": deployment})
        if isinstance(provider, RunsStudies):
            accounts.append(StudyAccount(requester.provider_type, requester.requester_name, provider))
    return accounts


def reconcile_all(factory: sessionmaker[Session], client: redis.Redis, deployment: str, *,
                  now: datetime) -> StudyPass:
    """Every study-based requester's account; one unreachable or misconfigured does not stop the others."""
    total = StudyPass()
    for account in study_accounts(factory, deployment):
        try:
            found = reconcile_studies(factory, client, account, now=now)
        except MephistoDistError as error:
            log.warning("cannot reconcile the studies of %s: %s", account.label, error)
            continue
        total.decisions += found.decisions
        total.recorded += found.recorded
        for run_id, agents in found.gave_up.items():
            total.gave_up.setdefault(run_id, []).extend(agents)
    return total
