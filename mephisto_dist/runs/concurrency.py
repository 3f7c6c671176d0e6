"""A run's concurrency pool as ``limits`` shows it, and changing its cap while the run is live."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import NotFoundError
from mephisto_dist.queue import LAUNCH_UNITS
from mephisto_dist.runs.launches import GLOBAL_POOL, run_pool, set_run_cap
from mephisto_dist.runtime import Runtime


@dataclass(frozen=True)
class Concurrency:
    """A run's pool: its cap (0 = unlimited) and the tokens held, and the deployment's when it has a cap."""

    run_id: int
    completed: bool
    cap: int
    held: int | None
    """``None`` for a completed run (it holds none; its Redis may be gone)."""
    global_cap: int
    global_held: int | None


def run_concurrency(runtime: Runtime, run_id: int, *, new_cap: int | None = None) -> Concurrency:
    """The run's pool, after setting its cap to ``new_cap`` when given (stored first: the database holds
    the cap; the pool's override makes every launcher see it at once, and a launch fills what it allows)."""
    with transaction(runtime.sessions) as session:
        run = session.get(TaskRun, run_id)
        if run is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        if new_cap is not None:
            session.execute(update(TaskRun).where(TaskRun.id == run_id).values(max_concurrent_units=new_cap))
        cap = run.max_concurrent_units if new_cap is None else new_cap
        completed = run.is_completed
    if completed:
        return Concurrency(run_id, True, cap, None, runtime.settings.max_concurrent_units, None)
    if new_cap is not None:
        set_run_cap(runtime.sessions, runtime.limiter, run_id, new_cap, lease_s=runtime.settings.lease_ttl_s)
        runtime.queue.enqueue(LAUNCH_UNITS, run_id)
    held = runtime.limiter.held(run_pool(run_id))
    global_cap = runtime.settings.max_concurrent_units
    global_held = runtime.limiter.held(GLOBAL_POOL) if global_cap else None
    return Concurrency(run_id, False, cap, held, global_cap, global_held)
