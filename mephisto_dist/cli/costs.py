"""``mephisto-dist costs``: what a run has paid and still owes, with the provider's fees."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mephisto_dist.cli.console import console, fail
from mephisto_dist.cli.runtime import opened_runtime
from mephisto_dist.review.accounts import costs_of


def costs(
    task_name: Annotated[str | None, typer.Option("--task-name", metavar="TASK_NAME",
                                                  help="Every run of this task_name.")] = None,
    run: Annotated[int | None, typer.Option("--run", metavar="RUN_ID", help="One task run.")] = None,
) -> None:
    """Rewards and bonuses paid and pending per run, the provider's fees on them, and the totals."""
    if (task_name is None) == (run is None):
        fail("give exactly one of --task-name NAME or --run RUN_ID")
    with opened_runtime() as runtime:
        found = costs_of(runtime.sessions, task_name=task_name, run_id=run)
    table = Table(title="costs (dollars)", title_justify="left")
    for column in ("run", "task_name", "provider", "units", "rewards paid", "bonuses paid", "fees paid",
                   "total paid", "pending (with fees)"):
        table.add_column(column, justify="right" if column not in ("task_name", "provider", "units") else "left")
    for run_costs in found:
        units = ", ".join(f"{status} {count}" for status, count in run_costs.units.items()) or "none"
        provider = run_costs.provider_type + (" (no money moves)" if run_costs.sandbox else "")
        table.add_row(str(run_costs.run_id), run_costs.task_name, provider, units,
                      f"{run_costs.rewards_paid:.2f}", f"{run_costs.bonuses_paid:.2f}",
                      f"{run_costs.fees_paid:.2f} ({run_costs.fee_rate:.0%})", f"{run_costs.total_paid:.2f}",
                      f"{run_costs.total_pending:.2f}")
    if len(found) > 1:
        table.add_row("all", "", "", "", f"{sum(c.rewards_paid for c in found):.2f}",
                      f"{sum(c.bonuses_paid for c in found):.2f}", f"{sum(c.fees_paid for c in found):.2f}",
                      f"{sum(c.total_paid for c in found):.2f}", f"{sum(c.total_pending for c in found):.2f}")
    console.print(table)
