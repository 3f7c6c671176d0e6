"""``mephisto-dist workers ...`` (list, block, unblock, clear-onboarding) and ``mephisto-dist
qualifications ...`` (list, create, grant, revoke)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from mephisto_dist.cli.console import console, fail
from mephisto_dist.cli.review import dispatch_calls
from mephisto_dist.cli.runtime import opened_runtime
from mephisto_dist.domain.qualifications import FAILED_SUFFIX
from mephisto_dist.review import workers as service

workers_app = typer.Typer(help="Workers: their record, blocking and unblocking, onboarding resets.",
                          no_args_is_help=True)
qualifications_app = typer.Typer(help="Qualifications: list, create, grant and revoke.", no_args_is_help=True)

WorkerArg = Annotated[str, typer.Argument(metavar="WORKER", help="The worker's name on the provider.")]
ProviderOption = Annotated[str | None, typer.Option(
    "--provider", metavar="PROVIDER", help="The worker's provider, when the name exists on several.")]
DEFAULT_BLOCK_REASON = "blocked by the requester"


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_value(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        fail(f"--value must be a whole number, got {text!r}")


# -- workers -----------------------------------------------------------------------------------------


@workers_app.command("list")
def list_workers(
    task_name: Annotated[str | None, typer.Option("--task-name", metavar="TASK_NAME",
                                                  help="Only this task's units and workers.")] = None,
) -> None:
    """Each worker's units done, accepted, rejected, soft rejected, and whether they are blocked."""
    with opened_runtime() as runtime:
        records = service.worker_records(runtime.sessions, task_name)
    histories, soft_blocks = records.histories, records.soft_blocks
    table = Table(title="workers" + (f" of {task_name}" if task_name else ""), title_justify="left")
    for column in ("worker", "provider", "units done", "accepted", "rejected", "soft rejected", "blocked"):
        table.add_column(column, justify="right" if column.startswith(("units", "acc", "rej", "soft")) else "left")
    for h in histories:
        blocked = f"yes: {h.block_reason}" if h.is_blocked else ""
        if h.worker_id in soft_blocks:
            blocked = ", ".join(filter(None, [blocked, "by " + ", ".join(soft_blocks[h.worker_id])]))
        table.add_row(h.worker_name, h.provider_type, str(h.submitted), str(h.accepted), str(h.rejected),
                      str(h.soft_rejected), blocked or "no")
    console.print(table)


@workers_app.command("block")
def block(
    worker: WorkerArg,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT",
                                        help="Why (the provider may show it).")] = DEFAULT_BLOCK_REASON,
    qualification: Annotated[str | None, typer.Option(
        "--qualification", metavar="QUALIFICATION", help="Block only from tasks with this block_qualification (grants it).")] = None,
    provider: ProviderOption = None,
) -> None:
    """Block a worker from every task (and on the provider), or from the tasks of one block qualification."""
    with opened_runtime() as runtime:
        done = service.block(runtime.sessions, worker, provider, reason=reason, qualification=qualification,
                             now=_now())
        if qualification is not None:
            message = f"worker {worker} blocked from tasks whose block_qualification is {qualification!r}"
        else:
            message = (f"worker {worker} blocked from every task" if done.changed
                       else f"worker {worker} was already blocked")
        console.print(message, highlight=False)
        dispatch_calls(runtime, done.call_ids)


@workers_app.command("unblock")
def unblock(
    worker: WorkerArg,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT",
                                        help="Why (the provider may show it).")] = "unblocked",
    qualification: Annotated[str | None, typer.Option(
        "--qualification", metavar="QUALIFICATION", help="Lift only this block qualification (revokes it).")] = None,
    provider: ProviderOption = None,
) -> None:
    """Lift a worker's block (everywhere, or one block qualification)."""
    with opened_runtime() as runtime:
        done = service.unblock(runtime.sessions, worker, provider, reason=reason, qualification=qualification,
                               now=_now())
        if qualification is not None:
            message = f"worker {worker} no longer blocked by {qualification!r}"
        else:
            message = f"worker {worker} unblocked" if done.changed else f"worker {worker} was not blocked"
        console.print(message, highlight=False)
        dispatch_calls(runtime, done.call_ids)


@workers_app.command("clear-onboarding")
def clear_onboarding_command(
    worker: WorkerArg,
    qualification: Annotated[str, typer.Option("--qualification", metavar="QUALIFICATION",
                                               help="The task's onboarding_qualification.")],
    provider: ProviderOption = None,
) -> None:
    """Let a worker take onboarding again: removes <NAME> and <NAME>-failed."""
    with opened_runtime() as runtime:
        cleared = service.reset_onboarding(runtime.sessions, worker, provider, qualification)
        dispatch_calls(runtime, cleared.call_ids)
    name = qualification.strip()
    if cleared.removed:
        console.print(f"removed {', '.join(cleared.removed)} from worker {worker}", highlight=False)
    else:
        console.print(f"worker {worker} held neither {name!r} nor {name + FAILED_SUFFIX!r}; nothing to clear",
                      highlight=False)


# -- qualifications ----------------------------------------------------------------------------------


@qualifications_app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(metavar="QUALIFICATION",
                                               help="Show who holds this qualification.")] = None,
) -> None:
    """Every qualification with how many workers hold it, or the holders of one."""
    with opened_runtime() as runtime:
        if name is None:
            summaries = service.qualifications(runtime.sessions)
            grants = None
        else:
            grants = service.holders(runtime.sessions, name)
    if grants is None:
        table = Table(title="qualifications", title_justify="left")
        for column in ("name", "workers", "created"):
            table.add_column(column)
        for summary in summaries:
            table.add_row(summary.name, str(summary.workers), summary.created_at.isoformat(timespec="seconds"))
    else:
        table = Table(title=f"workers holding {name}", title_justify="left")
        for column in ("worker", "provider", "value", "granted"):
            table.add_column(column)
        for g in grants:
            table.add_row(g.worker_name, g.provider_type, str(g.value), g.granted_at.isoformat(timespec="seconds"))
    console.print(table)


@qualifications_app.command("create")
def create(name: Annotated[str, typer.Argument(metavar="QUALIFICATION",
                                               help="The new qualification's name.")]) -> None:
    """Create a qualification (granting needs one that exists)."""
    with opened_runtime() as runtime:
        created = service.create(runtime.sessions, name, now=_now())
    console.print(f"qualification {name!r} " + ("created" if created else "already exists"), highlight=False)


@qualifications_app.command("grant")
def grant_command(
    name: Annotated[str, typer.Argument(metavar="QUALIFICATION", help="The qualification.")],
    worker: WorkerArg,
    value: Annotated[str, typer.Option("--value", metavar="N", help="Whole number the worker holds.")] = "1",
    provider: ProviderOption = None,
) -> None:
    """Give a worker a qualification (or change the value they hold)."""
    number = _parse_value(value)
    with opened_runtime() as runtime:
        calls = service.grant_to(runtime.sessions, name, worker, provider, number, now=_now())
        dispatch_calls(runtime, calls)
    console.print(f"granted {name}={number} to worker {worker}", highlight=False)


@qualifications_app.command("revoke")
def revoke_command(
    name: Annotated[str, typer.Argument(metavar="QUALIFICATION", help="The qualification.")],
    worker: WorkerArg,
    provider: ProviderOption = None,
) -> None:
    """Take a qualification away from a worker."""
    with opened_runtime() as runtime:
        calls = service.revoke_from(runtime.sessions, name, worker, provider)
        dispatch_calls(runtime, calls)
    console.print(f"revoked {name} from worker {worker}", highlight=False)


@workers_app.command("notify")
def notify(
    workers: Annotated[list[str], typer.Argument(metavar="WORKER", help="Worker names.")],
    subject: Annotated[str, typer.Option("--subject", metavar="TEXT", help="The message's subject.")],
    message: Annotated[str, typer.Option("--message", metavar="TEXT", help="The message.")],
    provider: ProviderOption = None,
) -> None:
    """Message workers through their provider (MTurk's NotifyWorkers), as ledger calls sent by Celery."""
    with opened_runtime() as runtime:
        calls = service.notify(runtime.sessions, workers, provider, subject, message, now=_now())
        dispatch_calls(runtime, calls)
    console.print(f"{len(calls)} notification(s) recorded and sent", highlight=False)
