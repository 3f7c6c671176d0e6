from __future__ import annotations

import pytest

from mephisto_dist.domain.status import (
    UNIT_FINAL,
    UNIT_TRANSITIONS,
    assignment_status,
    check_agent_transition,
    check_unit_transition,
)
from mephisto_dist.domain.status import (
    AgentStatus as A,
)
from mephisto_dist.domain.status import (
    UnitStatus as U,
)
from mephisto_dist.errors import IllegalTransition


@pytest.mark.parametrize(("old", "new"), [
    (U.CREATED, U.LAUNCHED), (U.LAUNCHED, U.ASSIGNED), (U.ASSIGNED, U.COMPLETED),
    (U.ASSIGNED, U.LAUNCHED), (U.COMPLETED, U.ACCEPTED), (U.COMPLETED, U.SOFT_REJECTED),
    (U.REJECTED, U.ACCEPTED), (U.LAUNCHED, U.EXPIRED),
])
def test_legal_unit_transitions(old: U, new: U) -> None:
    check_unit_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [
    (U.CREATED, U.ASSIGNED), (U.LAUNCHED, U.COMPLETED), (U.ACCEPTED, U.REJECTED),
    (U.EXPIRED, U.LAUNCHED), (U.SOFT_REJECTED, U.ACCEPTED), (U.COMPLETED, U.LAUNCHED),
])
def test_illegal_unit_transitions_raise(old: U, new: U) -> None:
    with pytest.raises(IllegalTransition, match=f"{old.value!r} to {new.value!r}"):
        check_unit_transition(old, new)


def test_final_unit_statuses_have_no_way_out() -> None:
    assert all(not UNIT_TRANSITIONS[s] for s in UNIT_FINAL)


def test_agent_transitions() -> None:
    check_agent_transition(A.IN_TASK, A.COMPLETED)
    check_agent_transition(A.IN_TASK, A.TIMEOUT)
    with pytest.raises(IllegalTransition):
        check_agent_transition(A.COMPLETED, A.IN_TASK)
    with pytest.raises(IllegalTransition):
        check_agent_transition(A.IN_TASK, A.COMPLETED, onboarding=True)


def test_an_agent_whose_partner_left_may_submit_as_is_but_nothing_else() -> None:
    check_agent_transition(A.PARTNER_DISCONNECT, A.COMPLETED)
    for other in set(A) - {A.COMPLETED}:
        with pytest.raises(IllegalTransition):
            check_agent_transition(A.PARTNER_DISCONNECT, other)
    with pytest.raises(IllegalTransition):
        check_agent_transition(A.DISCONNECT, A.COMPLETED)


@pytest.mark.parametrize(("units", "expected"), [
    ([U.LAUNCHED, U.LAUNCHED], U.LAUNCHED),
    ([U.ASSIGNED, U.COMPLETED], U.ASSIGNED),
    ([U.LAUNCHED, U.COMPLETED], U.LAUNCHED),
    ([U.COMPLETED, U.ACCEPTED], U.COMPLETED),
    ([U.ACCEPTED, U.REJECTED], U.MIXED),
    ([], U.CREATED),
])
def test_assignment_status_is_derived_from_units(units: list[U], expected: U) -> None:
    assert assignment_status(units) == expected
