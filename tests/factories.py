"""Building runs straight in the database for tests that do not need a task folder."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun, Unit
from mephisto_dist.db.transitions import move_units
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.runs.task_runs import NewRun, create_task_run
from mephisto_dist.work.claims import RunContext


def now() -> datetime:
    return datetime.now(UTC)


def make_run(factory: sessionmaker[Session], *, assignments: int = 3, units_per_assignment: int = 1,
             task_name: str = "test-task", launch: bool = True, max_concurrent_units: int = 0) -> RunContext:
    new = NewRun(
        task_name=task_name, blueprint_type="static_task", architect_type="mock", provider_type="mock",
        requester_name="mock_requester", sandbox=True,
        config={"task": {"task_name": task_name}, "architect": {}, "provider": {}, "blueprint": {}},
        task_dir="/nonexistent", build_dir="/nonexistent", server_url="http://localhost:3000",
        max_concurrent_units=max_concurrent_units, units_per_assignment=units_per_assignment,
        pay_amount=0.5,
        assignment_data=[{"text": f"item {i}", "html": "task.html"} for i in range(assignments)],
    )
    with transaction(factory) as session:
        run_id = create_task_run(session, new, now=now())
        if launch:
            ids = list(session.scalars(select(Unit.id).where(Unit.task_run_id == run_id)))
            move_units(session, ids, UnitStatus.CREATED, UnitStatus.LAUNCHED, now=now())
        run = session.get(TaskRun, run_id)
        assert run is not None
        return RunContext(run_id, run.task_id, task_name, "mock", run.build_dir, run.config)
