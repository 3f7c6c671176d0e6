"""``mephisto-dist import-mephisto``: a Mephisto data directory read into this deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mephisto_dist.cli.console import console


def import_mephisto(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Mephisto's data directory (it holds "
                                         "database.db and data/runs/).", show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be imported; write "
                                          "nothing.")] = False,
) -> None:
    """Import what Mephisto collected (1.1 or its current schema): tasks, runs, units, agents with their
    data and uploaded files, workers, qualifications and grants, requesters without their secrets. The
    runs come in closed, for status, export and review. Importing again adds only what is new."""
    from mephisto_dist.cli.runtime import opened_runtime
    from mephisto_dist.db.models import utcnow
    from mephisto_dist.imports.importing import import_data
    from mephisto_dist.imports.mephisto_data import read

    data = read(path.expanduser())
    with opened_runtime() as runtime:
        summary = import_data(runtime.sessions, runtime.storage, data, dry_run=dry_run, now=utcnow())
    console.print(f"{data.path}: {data.schema}", soft_wrap=True, highlight=False)
    console.print(summary.line(), soft_wrap=True, highlight=False)
    if summary.run_ids:
        console.print(f"runs: {', '.join(str(i) for i in summary.run_ids)} "
                      f"(mephisto-dist status RUN_ID, export --run RUN_ID)", soft_wrap=True, highlight=False)
