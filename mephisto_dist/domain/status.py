"""Status machines for Unit, Assignment, Agent and OnboardingAgent, as Mephisto defines them.

The transition tables and groupings live here and nowhere else. Writes go through
``mephisto_dist.db.transitions``, which checks a change against these tables and applies it as a
compare-and-set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from mephisto_dist.errors import IllegalTransition


class UnitStatus(StrEnum):
    CREATED = "created"
    LAUNCHED = "launched"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    MIXED = "mixed"  # assignment only
    REJECTED = "rejected"
    SOFT_REJECTED = "soft_rejected"
    EXPIRED = "expired"


AssignmentStatus = UnitStatus


class AgentStatus(StrEnum):
    NONE = "none"
    ACCEPTED = "accepted"
    ONBOARDING = "onboarding"
    WAITING = "waiting"
    IN_TASK = "in task"
    COMPLETED = "completed"
    DISCONNECT = "disconnect"
    TIMEOUT = "timeout"
    PARTNER_DISCONNECT = "partner disconnect"
    EXPIRED = "expired"
    RETURNED = "returned"
    APPROVED = "approved"
    SOFT_REJECTED = "soft_rejected"
    REJECTED = "rejected"


U = UnitStatus
A = AgentStatus

UNIT_FINAL = frozenset({U.ACCEPTED, U.EXPIRED, U.SOFT_REJECTED})
# Statuses that hold a concurrency slot: available on the provider or held by a worker.
UNIT_ACTIVE = frozenset({U.LAUNCHED, U.ASSIGNED})
# Statuses in which a worker's submission exists.
UNIT_SUBMITTED = frozenset({U.COMPLETED, U.ACCEPTED, U.REJECTED, U.SOFT_REJECTED})
UNIT_REVIEWABLE = frozenset({U.COMPLETED})
# A run is done when every unit is in one of these.
UNIT_DONE = frozenset({U.COMPLETED, U.ACCEPTED, U.REJECTED, U.SOFT_REJECTED, U.EXPIRED})
# Statuses in which a unit counts toward its worker's maximum_units_per_worker (Mephisto's count: a unit
# that timed out, was returned or expired counts no more).
UNIT_WORKER_COUNTED = frozenset({U.ASSIGNED}) | UNIT_SUBMITTED

_UNIT_NOT_FINAL = (U.CREATED, U.LAUNCHED, U.ASSIGNED, U.COMPLETED, U.REJECTED)
UNIT_TRANSITIONS: dict[UnitStatus, frozenset[UnitStatus]] = {
    U.CREATED: frozenset({U.LAUNCHED, U.EXPIRED}),
    U.LAUNCHED: frozenset({U.ASSIGNED, U.EXPIRED}),
    U.ASSIGNED: frozenset({U.COMPLETED, U.LAUNCHED, U.EXPIRED}),
    U.COMPLETED: frozenset({U.ACCEPTED, U.REJECTED, U.SOFT_REJECTED, U.EXPIRED}),
    U.REJECTED: frozenset({U.ACCEPTED, U.EXPIRED}),
    U.ACCEPTED: frozenset(),
    U.SOFT_REJECTED: frozenset(),
    U.EXPIRED: frozenset(),
}

AGENT_ACTIVE = frozenset({A.NONE, A.ACCEPTED, A.ONBOARDING, A.WAITING, A.IN_TASK})
AGENT_DISCONNECTED = frozenset({A.DISCONNECT, A.TIMEOUT, A.PARTNER_DISCONNECT, A.EXPIRED, A.RETURNED})
AGENT_FINAL = frozenset({A.APPROVED, A.SOFT_REJECTED, A.REJECTED}) | AGENT_DISCONNECTED

_AGENT_ENDINGS = frozenset({A.DISCONNECT, A.TIMEOUT, A.PARTNER_DISCONNECT, A.EXPIRED, A.RETURNED})
AGENT_TRANSITIONS: dict[AgentStatus, frozenset[AgentStatus]] = {
    A.NONE: frozenset({A.ACCEPTED, A.ONBOARDING, A.WAITING, A.IN_TASK}) | _AGENT_ENDINGS,
    A.ACCEPTED: frozenset({A.ONBOARDING, A.WAITING, A.IN_TASK}) | _AGENT_ENDINGS,
    A.ONBOARDING: frozenset({A.WAITING, A.IN_TASK, A.APPROVED, A.REJECTED}) | _AGENT_ENDINGS,
    A.WAITING: frozenset({A.IN_TASK, A.APPROVED, A.REJECTED}) | _AGENT_ENDINGS,
    A.IN_TASK: frozenset({A.COMPLETED}) | _AGENT_ENDINGS,
    A.COMPLETED: frozenset({A.APPROVED, A.SOFT_REJECTED, A.REJECTED, A.EXPIRED}),
    A.REJECTED: frozenset({A.APPROVED}),
    A.APPROVED: frozenset(),
    A.SOFT_REJECTED: frozenset(),
    A.DISCONNECT: frozenset(),
    A.TIMEOUT: frozenset(),
    # Mephisto lets an agent whose partner left submit the work as is ("please submit this task as is").
    A.PARTNER_DISCONNECT: frozenset({A.COMPLETED}),
    A.EXPIRED: frozenset(),
    A.RETURNED: frozenset(),
}
# An agent may submit in these (``db.transitions.complete_submission``).
AGENT_SUBMITTING = frozenset({A.IN_TASK, A.PARTNER_DISCONNECT})

# OnboardingAgent: none -> onboarding -> waiting -> approved | rejected (or a disconnect ending).
ONBOARDING_TRANSITIONS: dict[AgentStatus, frozenset[AgentStatus]] = {
    A.NONE: frozenset({A.ONBOARDING}) | _AGENT_ENDINGS,
    A.ONBOARDING: frozenset({A.WAITING, A.APPROVED, A.REJECTED}) | _AGENT_ENDINGS,
    A.WAITING: frozenset({A.APPROVED, A.REJECTED}) | _AGENT_ENDINGS,
    A.APPROVED: frozenset(),
    A.REJECTED: frozenset(),
    A.DISCONNECT: frozenset(),
    A.TIMEOUT: frozenset(),
    A.PARTNER_DISCONNECT: frozenset(),
    A.EXPIRED: frozenset(),
    A.RETURNED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class FreedTokens:
    """Which of a unit's concurrency tokens (DESIGN.md "Limits") it no longer needs in its new status."""

    run_slot: bool  # max_num_concurrent_units, its run's and the deployment's: held while launched or assigned
    worker_slot: bool  # allowed_concurrent: held while assigned
    worker_unit: bool  # maximum_units_per_worker: held while assigned or submitted


def tokens_freed(status: UnitStatus) -> FreedTokens:
    """What a unit that moved to ``status`` gives back: a unit handed back to the pool (``launched``
    after a return, a disconnect or a time-out) keeps its run slot and frees its worker's; a submitted
    one frees its slots but still counts among its worker's units; an expired one frees everything.
    ``created`` is a launch's view of the unit it gave up (its intent withdrawn or failed for good):
    the launch's run slot is free."""
    return FreedTokens(run_slot=status not in UNIT_ACTIVE, worker_slot=status != U.ASSIGNED,
                       worker_unit=status not in UNIT_WORKER_COUNTED)


def check_unit_transition(old: UnitStatus, new: UnitStatus) -> None:
    if new not in UNIT_TRANSITIONS[old]:
        raise IllegalTransition(f"a unit cannot go from {old.value!r} to {new.value!r}")


def check_agent_transition(old: AgentStatus, new: AgentStatus, *, onboarding: bool = False) -> None:
    table = ONBOARDING_TRANSITIONS if onboarding else AGENT_TRANSITIONS
    if new not in table.get(old, frozenset()):
        kind = "an onboarding agent" if onboarding else "an agent"
        raise IllegalTransition(f"{kind} cannot go from {old.value!r} to {new.value!r}")


def assignment_status(unit_statuses: Iterable[UnitStatus]) -> UnitStatus:
    """An Assignment's status, derived from its units the way Mephisto derives it."""
    statuses = [U(s) for s in unit_statuses]
    if not statuses:
        return U.CREATED
    distinct = set(statuses)
    if len(distinct) == 1:
        return statuses[0]
    if distinct & {U.CREATED, U.LAUNCHED, U.ASSIGNED}:
        if U.ASSIGNED in distinct:
            return U.ASSIGNED
        if U.LAUNCHED in distinct:
            return U.LAUNCHED
        return U.CREATED
    if distinct <= {U.ACCEPTED, U.REJECTED, U.SOFT_REJECTED, U.EXPIRED}:
        return U.MIXED
    if U.COMPLETED in distinct:
        return U.COMPLETED
    return U.MIXED


def run_is_done(status_counts: dict[UnitStatus, int]) -> bool:
    total = sum(status_counts.values())
    return total > 0 and all(s in UNIT_DONE for s, n in status_counts.items() if n)


class RemoteCallStatus(StrEnum):
    """A remote procedure call of a live task: queued, held by a Celery worker, or settled."""

    PENDING = "pending"
    RUNNING = "running"
    ANSWERED = "answered"
    FAILED = "failed"


C = RemoteCallStatus
REMOTE_CALL_TRANSITIONS: dict[RemoteCallStatus, frozenset[RemoteCallStatus]] = {
    C.PENDING: frozenset({C.RUNNING, C.FAILED}),
    # Back to pending when its worker died (the lease lapsed) and it has a run left.
    C.RUNNING: frozenset({C.ANSWERED, C.FAILED, C.PENDING}),
    C.ANSWERED: frozenset(),
    C.FAILED: frozenset(),
}
# The most Celery runs a call gets: the first, and one more if the worker running it died.
REMOTE_CALL_MAX_RUNS = 2


def check_remote_call_transition(old: RemoteCallStatus, new: RemoteCallStatus) -> None:
    if new not in REMOTE_CALL_TRANSITIONS[old]:
        raise IllegalTransition(f"a remote call cannot go from {old.value!r} to {new.value!r}")
