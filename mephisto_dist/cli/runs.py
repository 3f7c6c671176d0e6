"""``runs``, ``status`` and ``shutdown``: seeing and stopping runs from any machine."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

import httpx
import typer
from rich.table import Table
from sqlalchemy import func, select

from mephisto_dist.architects import architect_class
from mephisto_dist.cli.console import console, fail
from mephisto_dist.cli.health import print_processes, print_reconciled, print_servers, print_unreceived
from mephisto_dist.cli.runtime import open_runtime
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, Task, TaskRun, Unit, Worker
from mephisto_dist.domain.diagnosis import RunFacts, diagnose, diagnose_processes, workers_answer
from mephisto_dist.domain.run_summary import run_state, unit_progress
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.errors import ServiceError
from mephisto_dist.providers import make_provider, provider_class
from mephisto_dist.review.decisions import failed_calls
from mephisto_dist.runs import lifecycle
from mephisto_dist.runs.launches import LaunchTrouble, launch_trouble, run_pool
from mephisto_dist.runs.task_runs import mark_completed_if_done, unit_counts

ORDER = [s for s in UnitStatus if s != UnitStatus.MIXED]
RECENT_RECONCILED = 5


def _now() -> datetime:
    return datetime.now(UTC)


def _compact(counts: dict[UnitStatus, int]) -> str:
    return " · ".join(f"{s.value} {counts[s]}" for s in ORDER if counts.get(s))


def runs(
    task_name: Annotated[str | None, typer.Option("--task-name", help="Only runs of this task_name.")] = None,
) -> None:
    """A table of runs, grouped by task_name."""
    runtime = open_runtime()
    try:
        with read_transaction(runtime.sessions) as session:
            query = (select(TaskRun, Task.task_name).join(Task, Task.id == TaskRun.task_id)
                     .order_by(Task.task_name, TaskRun.id))
            if task_name is not None:
                query = query.where(Task.task_name == task_name)
            rows = session.execute(query).all()
            if task_name is not None and not rows:
                fail(f"no runs of task {task_name!r}")
            per_run: dict[int, dict[UnitStatus, int]] = defaultdict(dict)
            for run_id, status, count in session.execute(
                    select(Unit.task_run_id, Unit.status, func.count()).group_by(Unit.task_run_id, Unit.status)):
                per_run[run_id][UnitStatus(status)] = count
        table = Table(title="task runs")
        for column in ("task name", "run", "provider", "created", "units", "done"):
            table.add_column(column)
        previous = None
        for run, name in rows:
            counts = per_run.get(run.id, {})
            done = "yes" if run.is_completed else ("stopping" if run.shutdown_requested_at else "no")
            table.add_row(name if name != previous else "", str(run.id),
                          run.provider_type + (" (sandbox)" if run.sandbox and provider_class(run.provider_type).is_marketplace else ""),
                          run.created_at.strftime("%Y-%m-%d %H:%M"), _compact(counts), done)
            previous = name
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
        help="The task run (without it: the deployment's workers, beat, servers and reconcilers).")] = None,
) -> None:
    """Units per status, agents in flight, the pool, the server, whether workers and beat run, and why
    the run is not progressing."""
    runtime = open_runtime()
    now = _now()
    try:
        if run_id is None:
            deployment = print_processes(runtime)
            print_servers(runtime, None, now=now)
            if print_reconciled(runtime, None, limit=RECENT_RECONCILED):
                console.print("(mephisto-dist reconciled shows more)")
            for sentence in diagnose_processes(deployment):
                console.print(f"[bold]→[/] {sentence}", soft_wrap=True)
            print_unreceived(runtime, None)
            return
        with read_transaction(runtime.sessions) as session:
            run = session.get(TaskRun, run_id)
            if run is None:
                fail(f"task run {run_id} does not exist")
            counts = unit_counts(session, run_id)
            in_flight = session.execute(
                select(Unit.id, Worker.worker_name, Unit.assigned_at)
                .join(Worker, Worker.id == Unit.worker_id)
                .where(Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value)
                .order_by(Unit.assigned_at).limit(10)).all()
            recent = int(session.scalar(select(func.count()).select_from(Agent).where(
                Agent.task_run_id == run_id, Agent.submitted_at >= now - timedelta(minutes=10))) or 0)
            trouble = launch_trouble(session, run_id)
            calls_failed, call_error = failed_calls(session, run_id)
            events_failed = outbox.failed_messages(session, [run_id])
        finished = run.is_completed
        held: int | None = None
        cap: int | None = None
        if not finished:
            try:
                held = runtime.limiter.held(run_pool(run_id))
                cap = runtime.limiter.get_cap(run_pool(run_id))
            except ServiceError:
                held, cap = None, None
        cap = run.max_concurrent_units if cap is None else cap
        answers = _answers(run.server_url) if architect_class(run.architect_type).served_by_deployment and not finished else None
        state = run_state(finished=finished,
                          stopping_reason=(run.shutdown_reason or "") if run.shutdown_requested_at else None)
        console.print(f"[bold]task run {run_id}[/] ({run.provider_type}, {run.blueprint_type}): "
                      f"{state}: {unit_progress(counts)}", soft_wrap=True)
        table = Table()
        for s in ORDER:
            table.add_column(s.value, justify="right")
        table.add_row(*(str(counts.get(s, 0)) for s in ORDER))
        console.print(table)
        if finished:
            # A finished run holds no tokens and its server was stopped with it: nothing to probe.
            console.print("concurrency pool: released (the run is finished)", soft_wrap=True)
            console.print(f"server: {run.server_url or 'none'} (stopped with the run)", soft_wrap=True)
        else:
            console.print(f"concurrency pool: {'?' if held is None else held} held of "
                          f"{cap or 'unlimited'}", soft_wrap=True)
            console.print(f"server: {run.server_url or 'none'}"
                          + ("" if answers is None else (" (answers)" if answers else " (does NOT answer)")),
                          soft_wrap=True)
        console.print(f"provider hosts {counts.get(UnitStatus.LAUNCHED, 0)} available unit(s); "
                      f"{recent / 10:.1f} submissions/min over the last 10 min", soft_wrap=True)
        _print_provider_trouble(run_id, trouble, calls_failed, call_error)
        if events_failed:
            console.print(f"[red]TaskRunner events failed[/] ({len(events_failed)}, e.g. {events_failed[-1].key}) "
                          f"after every attempt: {events_failed[-1].error}; "
                          f"`mephisto-dist review resend --run {run_id}` tries again", soft_wrap=True, highlight=False)
        if in_flight:
            console.print("in flight (oldest first):")
            for unit_id, worker_name, assigned_at in in_flight:
                age = int((now - assigned_at).total_seconds()) if assigned_at else 0
                console.print(f"  unit {unit_id}: {worker_name}, for {age // 60} min {age % 60} s", soft_wrap=True)
        print_servers(runtime, run_id, now=now)
        print_reconciled(runtime, run_id, limit=RECENT_RECONCILED)
        processes = print_processes(runtime)
        facts = RunFacts(
            is_completed=run.is_completed, shutdown_reason=run.shutdown_reason if run.shutdown_requested_at else None,
            created=counts.get(UnitStatus.CREATED, 0), launched=counts.get(UnitStatus.LAUNCHED, 0),
            assigned=counts.get(UnitStatus.ASSIGNED, 0), cap=cap, held=held,
            oldest_assigned_at=in_flight[0][2] if in_flight else None,
            server_url=run.server_url, server_answers=answers, workers_seen=workers_answer(processes))
        for sentence in diagnose(facts, now=now) + diagnose_processes(processes):
            console.print(f"[bold]→[/] {sentence}", soft_wrap=True)
        print_unreceived(runtime, run_id)
    finally:
        runtime.close()


def _answers(url: str | None) -> bool:
    if not url:
        return False
    try:
        return httpx.get(url.rstrip("/") + "/task_config.json", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def shutdown(
    run_id: Annotated[int, typer.Argument(help="The task run.")],
    force: Annotated[bool, typer.Option("--force", help="Disconnect active workers and expire everything.")] = False,
) -> None:
    """Stop a run from any machine, as Ctrl-C does on an attached run (once, or twice with --force)."""
    runtime = open_runtime()
    now = _now()
    try:
        with transaction(runtime.sessions) as session:
            run = session.get(TaskRun, run_id)
            if run is None:
                fail(f"task run {run_id} does not exist")
            if run.is_completed:
                fail(f"task run {run_id} is already complete")
            provider = make_provider(run.provider_type, RunConfig.parse(run.config).provider.args)
            lifecycle.request_shutdown(session, run_id,
                                       lifecycle.REASON_FORCED if force else lifecycle.REASON_SHUTDOWN, now=now)
        if force:
            count = lifecycle.force_expire(runtime.sessions, provider, runtime.limiter, run_id, now=now)
            console.print(f"task run {run_id} force-stopped: {count} unit(s) expired, active workers disconnected")
            return
        count = lifecycle.expire_available_units(runtime.sessions, provider, runtime.limiter, run_id, now=now)
        with transaction(runtime.sessions) as session:
            waiting = lifecycle.in_flight(session, run_id)
            finished = mark_completed_if_done(session, run_id, now=now)
        if finished or not waiting:
            console.print(f"task run {run_id} stopped: {count} available unit(s) expired; nothing was in flight")
            return
        console.print(f"task run {run_id} stopping: {count} available unit(s) expired; waiting on {waiting} "
                      f"unit(s) in flight (mephisto-dist shutdown {run_id} --force to stop them now)")
    finally:
        runtime.close()


def reconciled(
    run_id: Annotated[int | None, typer.Option("--run", help="Only what concerned this task run.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many, newest first.")] = 50,
) -> None:
    """What beat's reconcilers found (orphaned servers, HITs, ...) and what they did about it."""
    runtime = open_runtime()
    try:
        if not print_reconciled(runtime, run_id, limit=limit):
            console.print("the reconcilers have found nothing to do")
    finally:
        runtime.close()
