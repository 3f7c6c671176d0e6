"""The one place statuses are written.

Every write checks the change against ``domain.status`` and applies it as a compare-and-set
(``UPDATE ... WHERE status IN (:old)``), so two processes can never both move the same row: the loser's
write matches no row and it is told so (``False`` / an empty list).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from mephisto_dist.db.models import Agent, OnboardingAgent, Unit
from mephisto_dist.domain.status import (
    AgentStatus,
    UnitStatus,
    check_agent_transition,
    check_unit_transition,
)

_UNIT_STAMPS = {
    UnitStatus.LAUNCHED: "launched_at",
    UnitStatus.ASSIGNED: "assigned_at",
    UnitStatus.COMPLETED: "completed_at",
}


def _as_set(old: UnitStatus | AgentStatus | Collection[Any]) -> list[Any]:
    if isinstance(old, (UnitStatus, AgentStatus)):
        return [old]
    return list(old)


def move_units(
    session: Session,
    unit_ids: Sequence[int],
    old: UnitStatus | Collection[UnitStatus],
    new: UnitStatus,
    *,
    now: datetime,
    **fields: Any,
) -> list[int]:
    """Move every listed unit that is still in one of ``old`` to ``new``; return the ids moved."""
    olds = _as_set(old)
    for status in olds:
        check_unit_transition(status, new)
    if not unit_ids:
        return []
    values: dict[str, Any] = {"status": new.value, "status_changed_at": now, **fields}
    stamp = _UNIT_STAMPS.get(new)
    if stamp is not None and stamp not in values:
        values[stamp] = now
    statement = (
        update(Unit)
        .where(Unit.id.in_(list(unit_ids)), Unit.status.in_([s.value for s in olds]))
        .values(**values)
        .returning(Unit.id)
        .execution_options(synchronize_session=False)
    )
    return [row[0] for row in session.execute(statement)]


def move_units_each(
    session: Session,
    changes: Sequence[tuple[int, dict[str, Any]]],
    old: UnitStatus,
    new: UnitStatus,
    *,
    now: datetime,
) -> list[int]:
    """Like :func:`move_units`, with fields of each unit's own (a provider's id, say); return the ids
    moved. One executemany compare-and-set for the batch, then one read of which rows it moved (they
    carry this call's ``now``)."""
    check_unit_transition(old, new)
    if not changes:
        return []
    names = sorted({name for _, fields in changes for name in fields})
    values: dict[str, Any] = {"status": new.value, "status_changed_at": now}
    stamp = _UNIT_STAMPS.get(new)
    if stamp is not None:
        values[stamp] = now
    values.update({name: bindparam(f"v_{name}") for name in names})
    table: Table = Unit.__table__  # type: ignore[assignment]
    statement = (update(table).where(table.c.id == bindparam("v_unit_id"), table.c.status == old.value)
                 .values(**values))
    params = [{"v_unit_id": unit_id, **{f"v_{n}": fields.get(n) for n in names}} for unit_id, fields in changes]
    session.connection().execute(statement, params)
    ids = [unit_id for unit_id, _ in changes]
    return list(session.scalars(select(Unit.id).where(
        Unit.id.in_(ids), Unit.status == new.value, Unit.status_changed_at == now)))


def move_unit(
    session: Session,
    unit_id: int,
    old: UnitStatus | Collection[UnitStatus],
    new: UnitStatus,
    *,
    now: datetime,
    **fields: Any,
) -> bool:
    return bool(move_units(session, [unit_id], old, new, now=now, **fields))


def move_agent(
    session: Session,
    agent_id: str,
    old: AgentStatus | Collection[AgentStatus],
    new: AgentStatus,
    *,
    now: datetime,
    **fields: Any,
) -> bool:
    olds = _as_set(old)
    for status in olds:
        check_agent_transition(status, new)
    statement = (
        update(Agent)
        .where(Agent.id == agent_id, Agent.status.in_([s.value for s in olds]))
        .values(status=new.value, status_changed_at=now, **fields)
        .execution_options(synchronize_session=False)
    )
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def move_onboarding_agent(
    session: Session,
    agent_id: str,
    old: AgentStatus | Collection[AgentStatus],
    new: AgentStatus,
    *,
    now: datetime,
    **fields: Any,
) -> bool:
    olds = _as_set(old)
    for status in olds:
        check_agent_transition(status, new, onboarding=True)
    statement = (
        update(OnboardingAgent)
        .where(OnboardingAgent.id == agent_id, OnboardingAgent.status.in_([s.value for s in olds]))
        .values(status=new.value, status_changed_at=now, **fields)
        .execution_options(synchronize_session=False)
    )
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]
