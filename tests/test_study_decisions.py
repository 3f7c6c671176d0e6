"""The study reconciler's decisions (``domain.studies``), without a clock or a provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mephisto_dist.domain.hits import HitStanding
from mephisto_dist.domain.studies import (
    SUBMIT_SETTLE_S,
    RunState,
    StudyAction,
    StudyFacts,
    SubmissionFacts,
    SubmissionVerdict,
    decide_study,
    judge_submission,
    standing,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def facts(**changes: object) -> StudyFacts:
    base: dict[str, object] = {"study_id": "s1", "ours": True, "run_state": RunState.LIVE, "status": "ACTIVE",
                               "total_places": 3, "places_taken": 2, "waiting_units": 1, "unmatched_starts": 0}
    return StudyFacts(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("run_state", [RunState.FINISHED, RunState.UNKNOWN, RunState.STOPPING])
@pytest.mark.parametrize("status", ["ACTIVE", "PAUSED"])
def test_an_open_study_of_a_run_that_ended_or_is_gone_is_stopped(run_state: RunState, status: str) -> None:
    decision = decide_study(facts(run_state=run_state, status=status))
    assert decision is not None and decision.action == StudyAction.STOP
    assert standing(facts(run_state=run_state, status=status)) == (
        HitStanding.ORPHAN if run_state == RunState.UNKNOWN else HitStanding.LEFT_OVER)


@pytest.mark.parametrize("status", ["AWAITING REVIEW", "COMPLETED", "UNPUBLISHED", "PROCESSING"])
def test_a_study_that_takes_nobody_is_left_alone_when_its_run_ended(status: str) -> None:
    assert decide_study(facts(run_state=RunState.FINISHED, status=status)) is None
    assert standing(facts(run_state=RunState.FINISHED, status=status)) == HitStanding.DONE


def test_a_study_of_another_tool_is_never_touched() -> None:
    assert decide_study(facts(ours=False, run_state=RunState.UNKNOWN)) is None


def test_a_live_study_with_a_place_for_each_waiting_unit_is_left_alone() -> None:
    assert decide_study(facts(total_places=3, places_taken=2, waiting_units=1)) is None
    assert standing(facts()) == HitStanding.LIVE


def test_a_study_gone_to_review_while_units_wait_gets_their_places_back() -> None:
    decision = decide_study(facts(status="AWAITING REVIEW", total_places=2, places_taken=2, waiting_units=2))
    assert decision is not None and decision.action == StudyAction.ADD_PLACES and decision.places == 2
    assert "AWAITING REVIEW" in decision.found


def test_participants_on_their_way_to_a_waiting_unit_need_no_new_place() -> None:
    # Two units wait; two participants took the last places and have not reached us yet: nothing to add,
    # and adding would open more places than units in flight (the cap).
    assert decide_study(facts(status="AWAITING REVIEW", total_places=4, places_taken=4, waiting_units=2,
                              unmatched_starts=2)) is None
    decision = decide_study(facts(total_places=4, places_taken=4, waiting_units=2, unmatched_starts=1))
    assert decision is not None and decision.places == 1


def test_a_paused_or_processing_live_study_is_left_alone() -> None:
    assert decide_study(facts(status="PAUSED", places_taken=3, waiting_units=2)) is None
    assert decide_study(facts(status="PROCESSING", places_taken=3, waiting_units=2)) is None


def test_spare_places_are_never_taken_back_nor_added_to() -> None:
    assert decide_study(facts(total_places=9, places_taken=2, waiting_units=1)) is None


def submission(status: str, *, completed_s_ago: float | None = 60, reached: bool = False,
               holds: bool = False) -> SubmissionFacts:
    completed = None if completed_s_ago is None else NOW - timedelta(seconds=completed_s_ago)
    return SubmissionFacts("sub1", status, completed, reached, holds)


def test_a_completed_submission_that_never_reached_us_is_unreceived_once_settled() -> None:
    assert judge_submission(submission("AWAITING REVIEW"), now=NOW) == SubmissionVerdict.UNRECEIVED
    assert judge_submission(submission("APPROVED"), now=NOW) == SubmissionVerdict.UNRECEIVED
    young = submission("AWAITING REVIEW", completed_s_ago=SUBMIT_SETTLE_S / 2)
    assert judge_submission(young, now=NOW) == SubmissionVerdict.IN_PROGRESS
    assert judge_submission(submission("AWAITING REVIEW", reached=True), now=NOW) == SubmissionVerdict.RECEIVED


def test_a_returned_or_timed_out_submission_frees_the_unit_it_holds() -> None:
    for status in ("RETURNED", "TIMED-OUT"):
        assert judge_submission(submission(status, holds=True), now=NOW) == SubmissionVerdict.GAVE_UP
        assert judge_submission(submission(status), now=NOW) == SubmissionVerdict.GONE
    assert judge_submission(submission("ACTIVE", holds=True), now=NOW) == SubmissionVerdict.IN_PROGRESS
