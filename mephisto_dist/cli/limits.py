"""``mephisto-dist limits RUN_ID [--max-concurrent N]``: a run's concurrency pool, and changing its cap
while it is live."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mephisto_dist.cli.console import console, fail
from mephisto_dist.cli.runtime import open_runtime
from mephisto_dist.runs.concurrency import run_concurrency


def limits(
    run_id: Annotated[int, typer.Argument(metavar="RUN_ID", help="The task run.")],
    max_concurrent: Annotated[int | None, typer.Option(
        "--max-concurrent", metavar="N", help="New max_num_concurrent_units for the live run (0 = unlimited).")] = None,
) -> None:
    """Show a run's concurrency pool (held, free, cap), or change its cap while it runs."""
    if max_concurrent is not None and max_concurrent < 0:
        fail("--max-concurrent must be 0 (unlimited) or more")
    runtime = open_runtime()
    try:
        pool = run_concurrency(runtime, run_id, new_cap=max_concurrent)
    finally:
        runtime.close()
    cap = pool.cap
    if pool.completed:
        # A finished run holds no slot, and its processes (an embedded Redis among them) may be gone.
        console.print(f"task run {run_id} is complete: no units out; cap "
                      f"{'unlimited' if cap == 0 else cap}")
        return
    held = pool.held or 0
    table = Table(title=f"task run {run_id} concurrency")
    for column in ("pool", "held", "free", "cap"):
        table.add_column(column, justify="right" if column != "pool" else "left")
    table.add_row("max_num_concurrent_units", str(held),
                  "unlimited" if cap == 0 else str(max(cap - held, 0)), "unlimited" if cap == 0 else str(cap))
    if pool.global_cap:
        global_held = pool.global_held or 0
        table.add_row("deployment (all runs)", str(global_held), str(max(pool.global_cap - global_held, 0)),
                      str(pool.global_cap))
    console.print(table)
    if max_concurrent is not None:
        console.print(f"cap of task run {run_id} set to {'unlimited' if cap == 0 else cap}"
                      + ("" if held <= cap or cap == 0 else
                         f"; {held} units are out, none launches until fewer than {cap} are"))
