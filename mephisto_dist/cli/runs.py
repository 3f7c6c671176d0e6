"""``runs``, ``status`` and ``shutdown``: seeing and stopping runs from any machine."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from mephisto_dist.cli.console import console
from mephisto_dist.cli.health import print_processes, print_reconciled, print_servers, print_unreceived
from mephisto_dist.cli.runtime import open_runtime
from mephisto_dist.domain.diagnosis import diagnose_processes
from mephisto_dist.domain.run_summary import run_state, unit_progress
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.review.decisions import failed_call_summary
from mephisto_dist.runners.assignments.shutdown import shut_down_runners
from mephisto_dist.runs.launches import LaunchTrouble
from mephisto_dist.runs.status import list_runs, run_diagnosis, run_status
from mephisto_dist.runs.stopping import stop_run
from mephisto_dist.runtime import Runtime

ORDER = [s for s in UnitStatus if s != UnitStatus.MIXED]
RECENT_RECONCILED = 5


def _now() -> datetime:
    return datetime.now(UTC)


def _compact(counts: Mapping[UnitStatus, int]) -> str:
    return " · ".join(f"{s.value} {counts[s]}" for s in ORDER if counts.get(s))


def runs(
    task_name: Annotated[str | None, typer.Option("--task-name", metavar="TASK_NAME",
                                                  help="Only runs of this task_name.")] = None,
) -> None:
    """A table of runs, grouped by task_name."""
    runtime = open_runtime()
    try:
        rows = list_runs(runtime, task_name)
        if not rows:
            console.print("no task runs yet (mephisto-dist run TASK_DIR starts one)")
            return
        table = Table(title="task runs")
        for column in ("task name", "run", "provider", "created", "units", "done"):
            table.add_column(column)
        previous = None
        for row in rows:
            table.add_row(row.task_name if row.task_name != previous else "", str(row.run_id), row.provider,
                          row.created_at.strftime("%Y-%m-%d %H:%M"), _compact(row.counts), row.done)
            previous = row.task_name
        console.print(table)
    finally:
        runtime.close()


def _print_provider_trouble(run_id: int, trouble: LaunchTrouble, calls_failed: int, call_error: str | None) -> None:
    """Provider calls that failed: the provider's own message, and how to send them again."""
    if trouble.failed:
        console.print(f"[red]launch failed[/] for {trouble.failed} unit(s) after every attempt: "
                      f"{trouble.last_error}; `mephisto-dist review resend --run {run_id}` tries again",
                      soft_wrap=True, highlight=False)
    elif trouble.retrying:
        console.print(f"[yellow]launch being retried[/] for {trouble.retrying} unit(s): {trouble.last_error}",
                      soft_wrap=True, highlight=False)
    if calls_failed:
        console.print(f"[red]provider calls failed[/] ({calls_failed}, review side effects) after every attempt: "
                      f"{call_error}; `mephisto-dist review resend --run {run_id}` tries again",
                      soft_wrap=True, highlight=False)


def status(run_id: Annotated[int | None, typer.Argument(
        metavar="RUN_ID", help="The task run (without it: the deployment's workers, beat, servers and reconcilers).")] = None,
) -> None:
    """Units per status, agents in flight, the pool, the server, whether workers and beat run, and why
    the run is not progressing."""
    runtime = open_runtime()
    now = _now()
    try:
        embedded = runtime.settings.embedded_redis
        if run_id is None:
            deployment = print_processes(runtime)
            print_servers(runtime, None, now=now)
            if print_reconciled(runtime, None, limit=RECENT_RECONCILED):
                console.print("(mephisto-dist reconciled shows more)")
            _print_open_runs(runtime, attached=not (embedded and deployment.worker_ages_s is None))
            if not embedded:
                for sentence in diagnose_processes(deployment):
                    console.print(f"[bold]→[/] {sentence}", soft_wrap=True)
            print_unreceived(runtime, None)
            return
        run = run_status(runtime, run_id, now=now)
        calls_failed, call_error = failed_call_summary(runtime.sessions, run_id)
        counts = run.counts
        finished = run.is_completed
        state = run_state(finished=finished, stopping_reason=run.stopping_reason)
        console.print(f"[bold]task run {run_id}[/] ({run.provider_type}, {run.blueprint_type}): "
                      f"{state}: {unit_progress(counts)}", soft_wrap=True)
        console.print(f"units: {_compact(counts) or 'none'}", soft_wrap=True)
        if finished:
            # A finished run holds no tokens and its server was stopped with it: nothing to probe.
            console.print("concurrency pool: released (the run is finished)", soft_wrap=True)
            console.print(f"server: {run.server_url or 'none'} (stopped with the run)", soft_wrap=True)
        else:
            held, answers = run.held, run.server_answers
            if held is not None or not embedded:
                console.print(f"concurrency pool: {'?' if held is None else held} held of "
                              f"{run.cap or 'unlimited'}", soft_wrap=True)
            console.print(f"server: {run.server_url or 'none'}"
                          + ("" if answers is None else (" (answers)" if answers else " (does NOT answer)")),
                          soft_wrap=True)
        console.print(f"provider hosts {counts.get(UnitStatus.LAUNCHED, 0)} available unit(s); "
                      f"{run.recent_submissions / 10:.1f} submissions/min over the last 10 min", soft_wrap=True)
        _print_provider_trouble(run_id, run.launch_trouble, calls_failed, call_error)
        events = run.failed_events
        if events is not None:
            console.print(f"[red]TaskRunner events failed[/] ({events.count}, e.g. {events.last_key}) "
                          f"after every attempt: {events.last_error}; "
                          f"`mephisto-dist review resend --run {run_id}` tries again", soft_wrap=True, highlight=False)
        if run.in_flight:
            console.print("in flight (oldest first):")
            for unit in run.in_flight:
                age = int((now - unit.assigned_at).total_seconds()) if unit.assigned_at else 0
                console.print(f"  unit {unit.unit_id}: {unit.worker_name}, for {age // 60} min {age % 60} s",
                              soft_wrap=True)
        print_servers(runtime, run_id, now=now)
        print_reconciled(runtime, run_id, limit=RECENT_RECONCILED)
        processes = print_processes(runtime)
        for sentence in run_diagnosis(run, processes, now=now, embedded=embedded):
            console.print(f"[bold]→[/] {sentence}", soft_wrap=True)
        print_unreceived(runtime, run_id)
    finally:
        runtime.close()


def _print_open_runs(runtime: Runtime, *, attached: bool) -> None:
    """The runs not finished, and, when no attached command serves them (embedded), the way on."""
    open_runs = [row for row in list_runs(runtime) if row.done != "yes"]
    if not open_runs:
        console.print("open task runs: none")
        return
    console.print("open task runs: " + "; ".join(
        f"{row.run_id} ({row.task_name}, {unit_progress(row.counts)}"
        + (", stopping" if row.done == "stopping" else "") + ")" for row in open_runs), soft_wrap=True)
    if not attached:
        for row in open_runs:
            console.print(f"[bold]→[/] task run {row.run_id} is served by no `mephisto-dist run` now: "
                          f"`mephisto-dist resume {row.run_id}` carries on, `mephisto-dist shutdown {row.run_id}` "
                          "ends it (mephisto-dist status RUN_ID says more)", soft_wrap=True)


def shutdown(
    run_id: Annotated[int, typer.Argument(metavar="RUN_ID", help="The task run.")],
    force: Annotated[bool, typer.Option("--force", help="Disconnect active workers and expire everything.")] = False,
) -> None:
    """Stop a run from any machine, as Ctrl-C does on an attached run (once, or twice with --force)."""
    runtime = open_runtime()
    now = _now()
    try:
        if force:
            # Before the stop disconnects the agents, so their runners see a shutdown, not a disconnect.
            shut_down_runners(runtime.sessions, runtime.redis, run_id)
        stopped = stop_run(runtime, run_id, force=force, now=now)
        if stopped.forced:
            console.print(f"task run {run_id} force-stopped: {stopped.expired} unit(s) expired, active workers "
                          "disconnected")
            return
        if stopped.finished or not stopped.in_flight:
            console.print(f"task run {run_id} stopped: {stopped.expired} available unit(s) expired; nothing was "
                          "in flight")
            return
        console.print(f"task run {run_id} stopping: {stopped.expired} available unit(s) expired; waiting on "
                      f"{stopped.in_flight} unit(s) in flight (mephisto-dist shutdown {run_id} --force to stop "
                      "them now)")
    finally:
        runtime.close()


def reconciled(
    run_id: Annotated[int | None, typer.Option("--run", metavar="RUN_ID",
                                               help="Only what concerned this task run.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, metavar="N", help="How many, newest first.")] = 50,
) -> None:
    """What beat's reconcilers found (orphaned servers, HITs, ...) and what they did about it."""
    runtime = open_runtime()
    try:
        if not print_reconciled(runtime, run_id, limit=limit):
            console.print("the reconcilers have found nothing to do")
    finally:
        runtime.close()
