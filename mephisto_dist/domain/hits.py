"""The HIT reconciler's decisions: pure functions of one HIT as the provider lists it and what the
database says of its run and unit.

A HIT is ours only when it carries our mark (``RequesterAnnotation`` naming this deployment, a run and a
unit); no decision ever touches another HIT. One of ours is an orphan when its run is finished or not in
the database, when no unit maps to it (the unit is gone or was relaunched on another HIT), or when its
unit is final. An orphan is expired first, then deleted once no assignment is pending and every
submitted one is reviewed (MTurk refuses to delete it before).

What the reconciler does to every HIT no unit needs is the same; what an operator is told differs
(``standing``): a HIT whose unit is final is *done* (its work is over, the HIT waits to be disposed), one
whose run finished is *left over*, and only one nothing of ours maps to is an *orphan*.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class HitAction(StrEnum):
    EXPIRE = "expire"
    DELETE = "delete"


class UnitState(StrEnum):
    ACTIVE = "active"          # the unit maps to this HIT and is not final
    FINAL = "final"            # the unit maps to this HIT and is final (accepted, rejected, expired, ...)
    UNKNOWN = "unknown"        # no such unit
    ELSEWHERE = "elsewhere"    # the unit now maps to another HIT


@dataclass(frozen=True)
class HitFacts:
    hit_id: str
    ours: bool
    run_state: str             # ``domain.servers.RunState`` values: live, finished, unknown
    unit_state: UnitState
    expired: bool              # its expiration has passed
    hit_status: str            # MTurk's: Assignable, Unassignable, Reviewable, Reviewing, Disposed
    pending: int               # assignments accepted and not yet submitted
    unreviewed: int | None     # submitted, neither approved nor rejected (None: not asked)
    unit_status: str | None = None  # the unit's status, when the unit maps to this HIT


class HitStanding(StrEnum):
    """What a HIT of ours is to the operator: the word ``hits outstanding`` and ``cleanup`` show."""

    LIVE = "live"              # its unit still needs it
    DONE = "done"              # its unit is final: the work is over, the HIT waits to be disposed
    LEFT_OVER = "left over"    # its run is finished while its unit was not final
    ORPHAN = "orphan"          # its run or unit is gone, or its unit moved to another HIT


@dataclass(frozen=True)
class HitDecision:
    hit_id: str
    found: str
    action: HitAction


def orphan_reason(facts: HitFacts) -> str | None:
    """Why a HIT of ours no longer belongs up, or None."""
    if facts.run_state == "unknown":
        return "its run is not in the database"
    if facts.unit_state == UnitState.UNKNOWN:
        return "no unit maps to it"
    if facts.unit_state == UnitState.ELSEWHERE:
        return "its unit was launched on another HIT"
    if facts.unit_state == UnitState.FINAL:
        return "its unit is final"
    if facts.run_state == "finished":
        return "its run is finished"
    return None


def standing(facts: HitFacts) -> HitStanding:
    """The word for a HIT of ours (``orphan_reason`` says why it no longer belongs up)."""
    if orphan_reason(facts) is None:
        return HitStanding.LIVE
    if facts.unit_state == UnitState.FINAL:
        return HitStanding.DONE
    if facts.run_state == "finished" and facts.unit_state == UnitState.ACTIVE:
        return HitStanding.LEFT_OVER
    return HitStanding.ORPHAN


def closed(facts: HitFacts) -> bool:
    """No worker can take it any more: expired, or every assignment submitted (Reviewable)."""
    return facts.expired or facts.hit_status in ("Reviewable", "Reviewing")


def decide_hit(facts: HitFacts) -> HitDecision | None:
    if not facts.ours or facts.hit_status == "Disposed":
        return None
    reason = orphan_reason(facts)
    if reason is None:
        return None
    if not closed(facts):
        return HitDecision(facts.hit_id, reason, HitAction.EXPIRE)
    if facts.pending == 0 and facts.unreviewed == 0 and facts.hit_status == "Reviewable":
        return HitDecision(facts.hit_id, reason, HitAction.DELETE)
    return None


def needs_review_count(facts: HitFacts) -> bool:
    """Whether the decision needs the count of unreviewed assignments (one more call per HIT)."""
    return facts.ours and facts.pending == 0 and facts.hit_status == "Reviewable" \
        and orphan_reason(facts) is not None
