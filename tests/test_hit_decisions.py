"""The HIT reconciler's decision: a pure function of one HIT's facts."""

from __future__ import annotations

from mephisto_dist.domain.hits import HitAction, HitFacts, HitStanding, UnitState, decide_hit, standing


def decide(ours: bool = True, run: str = "unknown", unit: UnitState = UnitState.UNKNOWN, expired: bool = False,
           status: str = "Assignable", pending: int = 0, unreviewed: int | None = 0) -> HitAction | None:
    decision = decide_hit(HitFacts("H", ours, run, unit, expired, status, pending, unreviewed))
    return None if decision is None else decision.action


def test_a_hit_without_our_mark_is_never_touched() -> None:
    assert decide(ours=False) is None
    assert decide(ours=False, expired=True, status="Reviewable") is None


def test_a_hit_of_a_live_unit_is_left_up() -> None:
    assert decide(run="live", unit=UnitState.ACTIVE) is None
    assert decide(run="live", unit=UnitState.ACTIVE, expired=True, status="Reviewable") is None


def test_orphans_are_expired_then_deleted_once_nothing_is_pending_or_unreviewed() -> None:
    for run, unit in (("unknown", UnitState.UNKNOWN), ("live", UnitState.FINAL), ("live", UnitState.ELSEWHERE),
                      ("finished", UnitState.ACTIVE), ("live", UnitState.UNKNOWN)):
        assert decide(run=run, unit=unit) == HitAction.EXPIRE
        assert decide(run=run, unit=unit, expired=True, status="Reviewable") == HitAction.DELETE
    assert decide(expired=True, status="Unassignable", pending=1) is None  # a worker still holds it
    assert decide(expired=True, status="Reviewable", unreviewed=1) is None  # a submission awaits review
    assert decide(status="Reviewable") == HitAction.DELETE  # all submitted and reviewed: no expiry needed
    assert decide(status="Disposed") is None


def test_the_operator_is_told_done_left_over_or_orphan_and_only_a_hit_nothing_maps_to_is_an_orphan() -> None:
    def word(run: str, unit: UnitState) -> HitStanding:
        return standing(HitFacts("H", True, run, unit, False, "Assignable", 0, None))

    assert word("live", UnitState.ACTIVE) == HitStanding.LIVE
    assert word("live", UnitState.FINAL) == HitStanding.DONE
    assert word("finished", UnitState.FINAL) == HitStanding.DONE
    assert word("finished", UnitState.ACTIVE) == HitStanding.LEFT_OVER
    for run, unit in (("unknown", UnitState.UNKNOWN), ("live", UnitState.UNKNOWN), ("live", UnitState.ELSEWHERE),
                      ("finished", UnitState.ELSEWHERE)):
        assert word(run, unit) == HitStanding.ORPHAN, (run, unit)
