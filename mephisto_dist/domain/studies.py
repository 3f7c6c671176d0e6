"""The study reconciler's decisions: pure functions of one study (a run on a study-based provider such as
Prolific) as the provider lists it, its submissions, what the database says of its run and units, and
``now``.

A study is ours only when its mark names this deployment and a run; no decision ever touches another.
What is decided:

- a study of ours still open to participants (``ACTIVE`` or ``PAUSED``) whose run is finished, being shut
  down or gone is *stopped* (a killed run's study, one whose shutdown could not reach the provider);
- a live run's study is given the places its waiting units lack: a unit launched here that no participant
  holds wants one free place, less the participants who took a place and have not reached us yet (they
  will take those units). Places are only ever added, and only up to that need, so a study never holds
  more active places than units in flight (the cap), and a study gone to ``AWAITING REVIEW`` because its
  last place was taken comes back as soon as a unit waits for a place;
- a submission the provider holds as completed that never reached us is *unreceived* (recorded and flagged
  for review), once it is older than ``SUBMIT_SETTLE_S`` (the participant's page sends them to the
  provider after our submit answered: a younger one may be on its way to us still);
- a submission returned or timed out on the provider whose participant holds a unit here *gave up*: the
  unit goes back to the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mephisto_dist.domain.hits import HitStanding

ACTIVE, PAUSED, AWAITING_REVIEW, COMPLETED, UNPUBLISHED, PROCESSING = (
    "ACTIVE", "PAUSED", "AWAITING REVIEW", "COMPLETED", "UNPUBLISHED", "PROCESSING")
OPEN = frozenset({ACTIVE, PAUSED})
"""Statuses in which a study still takes participants (or will again when started)."""
SUBMISSION_DONE = frozenset({"AWAITING REVIEW", "APPROVED", "REJECTED"})
SUBMISSION_IN_PROGRESS = frozenset({"ACTIVE", "RESERVED"})
SUBMISSION_GAVE_UP = frozenset({"RETURNED", "TIMED-OUT"})
SUBMIT_SETTLE_S = 10.0


class RunState(StrEnum):
    LIVE = "live"            # open, no shutdown asked
    STOPPING = "stopping"    # a shutdown was asked (it may have failed to reach the provider)
    FINISHED = "finished"
    UNKNOWN = "unknown"      # not in the database


class StudyAction(StrEnum):
    STOP = "stop"
    ADD_PLACES = "add places"


@dataclass(frozen=True)
class StudyFacts:
    study_id: str
    ours: bool
    run_state: RunState
    status: str                # the provider's: ACTIVE, PAUSED, AWAITING REVIEW, COMPLETED, PROCESSING, ...
    total_places: int
    places_taken: int          # held by a submission in progress or done
    waiting_units: int = 0     # units launched here that no participant holds
    unmatched_starts: int = 0  # submissions in progress whose participant holds no unit here (yet)


@dataclass(frozen=True)
class StudyDecision:
    study_id: str
    found: str
    action: StudyAction
    places: int = 0            # for ADD_PLACES: how many


def orphan_reason(facts: StudyFacts) -> str | None:
    """Why a study of ours should no longer take participants, or None."""
    if facts.run_state == RunState.UNKNOWN:
        return "its run is not in the database"
    if facts.run_state == RunState.FINISHED:
        return "its run is finished"
    if facts.run_state == RunState.STOPPING:
        return "its run is being shut down"
    return None


def standing(facts: StudyFacts) -> HitStanding:
    """The word ``hits outstanding`` shows for a study of ours."""
    if orphan_reason(facts) is None:
        return HitStanding.LIVE
    if facts.run_state == RunState.UNKNOWN:
        return HitStanding.ORPHAN
    return HitStanding.LEFT_OVER if facts.status in OPEN else HitStanding.DONE


def places_wanted(facts: StudyFacts) -> int:
    """Free places a live run's study should have: one per waiting unit, less the participants already on
    their way to one."""
    return max(0, facts.waiting_units - facts.unmatched_starts)


def free_places(facts: StudyFacts) -> int:
    return max(0, facts.total_places - facts.places_taken)


def decide_study(facts: StudyFacts) -> StudyDecision | None:
    if not facts.ours or facts.status == PROCESSING:
        return None  # another's; or changing at the provider: the next pass sees where it settled
    reason = orphan_reason(facts)
    if reason is not None:
        return StudyDecision(facts.study_id, reason, StudyAction.STOP) if facts.status in OPEN else None
    if facts.status not in (ACTIVE, AWAITING_REVIEW, COMPLETED):
        return None  # unpublished (the launcher publishes it) or paused by hand
    lacking = places_wanted(facts) - free_places(facts)
    if lacking <= 0:
        return None
    found = (f"{facts.waiting_units} unit(s) wait for a participant and {free_places(facts)} place(s) are free"
             + (f" (study {facts.status})" if facts.status != ACTIVE else ""))
    return StudyDecision(facts.study_id, found, StudyAction.ADD_PLACES, lacking)


class SubmissionVerdict(StrEnum):
    RECEIVED = "received"        # it reached us (an agent submitted with it)
    IN_PROGRESS = "in progress"  # the participant is at work, or not settled yet
    UNRECEIVED = "unreceived"    # completed on the provider, never reached us
    GAVE_UP = "gave up"          # returned or timed out while holding a unit here: hand the unit back
    GONE = "gone"                # returned or timed out, holding nothing here


@dataclass(frozen=True)
class SubmissionFacts:
    submission_id: str
    status: str
    completed_at: datetime | None
    reached_us: bool             # an agent of ours submitted with this submission id
    holds_unit: bool             # an agent of ours with this submission id holds an assigned unit


def judge_submission(facts: SubmissionFacts, *, now: datetime) -> SubmissionVerdict:
    if facts.reached_us:
        return SubmissionVerdict.RECEIVED
    if facts.status in SUBMISSION_GAVE_UP:
        return SubmissionVerdict.GAVE_UP if facts.holds_unit else SubmissionVerdict.GONE
    if facts.status in SUBMISSION_DONE:
        settled = facts.completed_at is None or facts.completed_at <= now - timedelta(seconds=SUBMIT_SETTLE_S)
        return SubmissionVerdict.UNRECEIVED if settled else SubmissionVerdict.IN_PROGRESS
    return SubmissionVerdict.IN_PROGRESS
