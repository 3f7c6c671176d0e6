"""Screening units (Mephisto's ``ScreenTaskRequired``): with ``use_screening_task``, a worker who does not
hold ``passed_qualification_name`` is screened before real units. With a screening-data generator in the
task script, the worker first gets a unit made for them from it (``unit_index`` -1, at most
``max_screening_units`` per run, counted on the run's row in the transaction that makes the unit); with
``screening_data_factory=False``, their first real unit screens them. Either way the script's
``on_unit_submitted`` (``ScreenTaskRequired.create_validation_function``) grants the pass qualification
or the run's ``block_qualification``, which refuses the worker from then on.

A screening unit is handed to the worker inside their current visit, never published on the
marketplace on its own, as Mephisto did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from mephisto_dist.db.models import Assignment, TaskRun, Unit
from mephisto_dist.db.transitions import move_unit
from mephisto_dist.domain.status import UnitStatus

SCREENING_UNIT_INDEX: Final = -1
PENDING: Final = ("Your answers to the qualification unit are being checked. Please come back in a minute "
                  "for the task itself.")


@dataclass(frozen=True)
class Screening:
    passed_qualification: str
    max_units: int
    generated: bool
    """Units come from the script's generator; otherwise the worker's first real unit screens them."""



def screening_of(blueprint_args: Mapping[str, Any], generated: bool) -> Screening | None:
    if not blueprint_args.get("use_screening_task"):
        return None
    return Screening(str(blueprint_args.get("passed_qualification_name") or ""),
                     int(blueprint_args.get("max_screening_units") or 0), generated)


_MADE_COLUMNS: Final = {"screening": TaskRun.screening_units_made, "gold": TaskRun.gold_units_made}


def take_made_unit(session: Session, run_id: int, kind: str, cap: int) -> bool:
    """Count one more ``kind`` ("screening" or "gold") unit made by the run, unless it made ``cap`` already
    (0: no cap); False when it did. The count is the run's row, written in the transaction that makes the
    unit: it holds the row until the commit (two requests never both take the last one), a rollback
    takes it back with the unit, and nothing is lost when Redis is."""
    column = _MADE_COLUMNS[kind]
    statement = update(TaskRun).where(TaskRun.id == run_id).values({column: column + 1})
    if cap:
        statement = statement.where(column < cap)
    return bool(session.connection().execute(statement).rowcount)


def give_back_made_unit(session: Session, run_id: int, kind: str) -> None:
    """Undo :func:`take_made_unit` in the same transaction, for a unit that was not made after all."""
    column = _MADE_COLUMNS[kind]
    session.connection().execute(update(TaskRun).where(TaskRun.id == run_id).values({column: column - 1}))


_WORKERS_SCREENING = select(Unit.id).where(
    Unit.task_run_id == bindparam("run_id"), Unit.unit_index == SCREENING_UNIT_INDEX,
    Unit.worker_id == bindparam("worker_id")).limit(1)


def has_screening_unit(session: Session, run_id: int, worker_id: int) -> bool:
    """Whether the worker already got a screening unit in this run (working on it, or being checked)."""
    found = session.connection().execute(_WORKERS_SCREENING, {"run_id": run_id, "worker_id": worker_id})
    return found.first() is not None


def create_unit(session: Session, run_id: int, data: dict[str, Any], pay_amount: float, *,
                now: datetime, unit_index: int = SCREENING_UNIT_INDEX) -> tuple[int, int]:
    """A launched unit made for one worker (screening, or gold with its own index) in an assignment of
    its own; (unit id, assignment id)."""
    assignment_id = int(session.scalars(insert(Assignment).returning(Assignment.id), [
        {"task_run_id": run_id, "data_index": unit_index, "data": data, "created_at": now}]).one())
    unit_id = int(session.scalars(insert(Unit).returning(Unit.id), [
        {"assignment_id": assignment_id, "task_run_id": run_id, "unit_index": unit_index,
         "pay_amount": pay_amount, "status": UnitStatus.CREATED.value, "created_at": now,
         "status_changed_at": now}]).one())
    if not move_unit(session, unit_id, UnitStatus.CREATED, UnitStatus.LAUNCHED, now=now):
        raise RuntimeError(f"unit {unit_id} made for a worker could not be launched")
    return unit_id, assignment_id
