"""``mephisto-dist limits RUN_ID [--max-concurrent N]``: a run's concurrency pool, and changing its cap
while it is live."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import update

from mephisto_dist.cli.console import console, fail
from mephisto_dist.cli.runtime import open_runtime
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.queue import LAUNCH_UNITS
from mephisto_dist.runs.launches import GLOBAL_POOL, run_pool, set_run_cap


def limits(
    run_id: Annotated[int, typer.Argument(help="The task run.")],
    max_concurrent: Annotated[int | None, typer.Option(
        "--max-concurrent", help="New max_num_concurrent_units for the live run (0 = unlimited).")] = None,
) -> None:
    """Show a run's concurrency pool (held, free, cap), or change its cap while it runs."""
    if max_concurrent is not None and max_concurrent < 0:
        fail("--max-concurrent must be 0 (unlimited) or more")
    runtime = open_runtime()
    try:
        with transaction(runtime.sessions) as session:
            run = session.get(TaskRun, run_id)
            if run is None:
                fail(f"task run {run_id} does not exist")
            if max_concurrent is not None:
                session.execute(update(TaskRun).where(TaskRun.id == run_id)
                                .values(max_concurrent_units=max_concurrent))
            cap = run.max_concurrent_units if max_concurrent is None else max_concurrent
            completed = run.is_completed
        pool = run_pool(run_id)
        if completed:
            # A finished run holds no slot, and its processes (an embedded Redis among them) may be gone.
            console.print(f"task run {run_id} is complete: no units out; cap "
                          f"{'unlimited' if cap == 0 else cap}")
            return
        if max_concurrent is not None:
            # The database holds the cap; the stored override makes every launcher see it at once.
            set_run_cap(runtime.sessions, runtime.limiter, run_id, max_concurrent, lease_s=runtime.settings.lease_ttl_s)
            if not completed:
                runtime.queue.enqueue(LAUNCH_UNITS, run_id)
        held = runtime.limiter.held(pool)
        table = Table(title=f"task run {run_id} concurrency" + (" (completed)" if completed else ""))
        for column in ("pool", "held", "free", "cap"):
            table.add_column(column, justify="right" if column != "pool" else "left")
        table.add_row("max_num_concurrent_units", str(held),
                      "unlimited" if cap == 0 else str(max(cap - held, 0)), "unlimited" if cap == 0 else str(cap))
        global_cap = runtime.settings.max_concurrent_units
        if global_cap:
            global_held = runtime.limiter.held(GLOBAL_POOL)
            table.add_row("deployment (all runs)", str(global_held), str(max(global_cap - global_held, 0)),
                          str(global_cap))
        console.print(table)
        if max_concurrent is not None:
            console.print(f"cap of task run {run_id} set to {'unlimited' if cap == 0 else cap}"
                          + ("" if held <= cap or cap == 0 else
                             f"; {held} units are out, none launches until fewer than {cap} are"))
    finally:
        runtime.close()
