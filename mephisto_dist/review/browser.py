"""Results in Python: a ``DataBrowser`` for notebooks and scripts, with Mephisto's method names where they
fit (``get_task_name_list``, ``get_units_for_task_name``, ``get_units_for_run_id``, ``get_data_from_unit``,
``get_worker_with_qualification``), reading the same database the CLI uses, without SQL.

    from mephisto_dist.review.browser import DataBrowser

    with DataBrowser() as browser:              # MEPHISTO_DIST_DATABASE_URL, or the embedded default
        for unit in browser.get_units_for_task_name("my-task"):
            data = browser.get_data_from_unit(unit)
            print(unit.worker_name, unit.get_status(), data["data"]["outputs"])

A unit's data is its export record (``mephisto-dist export``): what a notebook reads is what a file holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import make_engine, make_sessionmaker, read_transaction
from mephisto_dist.db.migrate import check_schema
from mephisto_dist.db.models import Task, TaskRun, Unit
from mephisto_dist.domain.status import UNIT_SUBMITTED
from mephisto_dist.review.decisions import WorkerHistory, worker_histories
from mephisto_dist.review.export import resolve_runs, unit_records
from mephisto_dist.review.qualifications import find_qualification, list_grants
from mephisto_dist.settings import Settings, load_settings

REVIEWABLE = tuple(sorted(s.value for s in UNIT_SUBMITTED))
"""The statuses Mephisto's DataBrowser returns: submitted, whether judged yet or not."""


@dataclass(frozen=True)
class BrowsedUnit:
    """A unit as the browser returns it: its ids, status and worker, and its whole export record."""

    db_id: str
    assignment_id: str
    task_run_id: str
    task_name: str
    status: str
    worker_name: str | None
    record: dict[str, Any]

    def get_status(self) -> str:
        return self.status

    def get_db_status(self) -> str:
        return self.status


@dataclass(frozen=True)
class RunSummary:
    """A task run: its task, provider, when it was created, whether it is done, its units per status."""

    run_id: int
    task_name: str
    provider_type: str
    created_at: datetime
    is_completed: bool
    units: dict[str, int]


class DataBrowser:
    """Read-only access to tasks, runs, units with their data, workers and qualifications. Opened on
    ``database_url`` (default: the settings' database, as every command uses); close it, or use it in a
    ``with`` block."""

    def __init__(self, database_url: str | None = None, *, settings: Settings | None = None) -> None:
        settings = settings or load_settings()
        if database_url is not None:
            settings = replace(settings, database_url=database_url)
        self._engine = make_engine(settings.database_url)
        # Reading needs the schema as it is now; a browser never migrates (``mephisto-dist migrate`` does).
        check_schema(self._engine, create_embedded=False)
        self._sessions: sessionmaker[Session] = make_sessionmaker(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # -- Mephisto's names ----------------------------------------------------------------------------

    def get_task_name_list(self) -> list[str]:
        with read_transaction(self._sessions) as session:
            return list(session.scalars(select(Task.task_name).order_by(Task.task_name)))

    def get_units_for_task_name(self, task_name: str) -> list[BrowsedUnit]:
        """Every submitted unit (completed, accepted, rejected, soft-rejected) of every run of
        ``task_name``; :class:`~mephisto_dist.errors.NotFoundError` naming the known tasks otherwise."""
        return list(self.iter_units(task_name=task_name))

    def get_units_for_run_id(self, run_id: int | str) -> list[BrowsedUnit]:
        """Every submitted unit of one run."""
        return list(self.iter_units(run_id=int(run_id)))

    def get_data_from_unit(self, unit: BrowsedUnit) -> dict[str, Any]:
        """Mephisto's shape (``worker_id``, ``unit_id``, ``assignment_id``, ``status``, ``data``,
        ``task_start``, ``task_end``), plus the rest of the export record: worker name, metadata (tips,
        feedback), provider ids, review decision and payment."""
        record = unit.record
        return {**record, "task_start": record["start_time"], "task_end": record["end_time"]}

    def get_worker_with_qualification(self, qualification_name: str) -> list[str]:
        """The names of the workers granted ``qualification_name`` (any value)."""
        with read_transaction(self._sessions) as session:
            qualification = find_qualification(session, qualification_name)
            return [grant.worker_name for grant in list_grants(session, qualification.id)]

    # -- beyond Mephisto's -------------------------------------------------------------------------

    def iter_units(self, *, task_name: str | None = None, run_id: int | None = None,
                   statuses: Sequence[str] | None = REVIEWABLE) -> Iterator[BrowsedUnit]:
        """Units of a task or a run, in id order, streamed (a notebook can walk a 100,000-unit task);
        ``statuses=None``: every unit, open and expired ones included."""
        if (task_name is None) == (run_id is None):
            raise ValueError("give task_name or run_id, not both")
        wanted = None if statuses is None else set(statuses)
        with read_transaction(self._sessions) as session:
            run_ids = resolve_runs(session, task_name=task_name, run_id=run_id)
            for record in unit_records(session, run_ids, include_unsubmitted=True, include_expired=True):
                if wanted is not None and record["status"] not in wanted:
                    continue
                yield BrowsedUnit(db_id=record["unit_id"], assignment_id=record["assignment_id"],
                                  task_run_id=record["task_run_id"], task_name=record["task_name"],
                                  status=record["status"], worker_name=record["worker_name"], record=record)

    def get_runs(self, task_name: str | None = None) -> list[RunSummary]:
        """Every run (or every run of ``task_name``), oldest first, with its units per status."""
        with read_transaction(self._sessions) as session:
            query = (select(TaskRun, Task.task_name).join(Task, Task.id == TaskRun.task_id).order_by(TaskRun.id))
            if task_name is not None:
                query = query.where(TaskRun.id.in_(resolve_runs(session, task_name=task_name, run_id=None)))
            runs = session.execute(query).all()
            counts: dict[int, dict[str, int]] = {}
            for run_id, status, count in session.execute(
                    select(Unit.task_run_id, Unit.status, func.count()).group_by(Unit.task_run_id, Unit.status)):
                counts.setdefault(run_id, {})[status] = count
        return [RunSummary(run.id, name, run.provider_type, run.created_at, run.is_completed,
                           counts.get(run.id, {})) for run, name in runs]

    def get_workers(self, task_name: str | None = None) -> list[WorkerHistory]:
        """Every worker (or those who submitted a unit of ``task_name``): units submitted, accepted,
        rejected and soft-rejected, and whether blocked."""
        with read_transaction(self._sessions) as session:
            task_id = None
            if task_name is not None:
                resolve_runs(session, task_name=task_name, run_id=None)  # an unknown name is an error
                task_id = session.scalar(select(Task.id).where(Task.task_name == task_name))
            return worker_histories(session, task_id=task_id)


__all__ = ["REVIEWABLE", "BrowsedUnit", "DataBrowser", "RunSummary"]
