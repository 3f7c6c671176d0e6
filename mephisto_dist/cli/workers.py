"""``mephisto-dist workers ...`` (list, block, unblock, clear-onboarding) and ``mephisto-dist
qualifications ...`` (list, create, grant, revoke)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from mephisto_dist.cli.console import console, fail
from mephisto_dist.cli.review import dispatch_calls
from mephisto_dist.cli.runtime import opened_runtime
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import GrantedQualification, Qualification, Task, TaskRun
from mephisto_dist.domain.qualifications import FAILED_SUFFIX
from mephisto_dist.errors import NotFoundError
from mephisto_dist.review.decisions import worker_histories
from mephisto_dist.review.export import resolve_runs
from mephisto_dist.review.qualifications import (
    block_worker,
    check_name,
    clear_onboarding,
    create_qualification,
    find_qualification,
    find_worker,
    grant,
    list_grants,
    list_qualifications,
    pending_worker_calls,
    record_notification,
    revoke,
    unblock_worker,
)

workers_app = typer.Typer(help="Workers: their record, blocking and unblocking, onboarding resets.",
                          no_args_is_help=True)
qualifications_app = typer.Typer(help="Qualifications: list, create, grant and revoke.", no_args_is_help=True)

WorkerArg = Annotated[str, typer.Argument(metavar="WORKER", help="The worker's name on the provider.")]
ProviderOption = Annotated[str | None, typer.Option(
    "--provider", help="The worker's provider, when the name exists on several.")]
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
    task_name: Annotated[str | None, typer.Option("--task-name", help="Only this task's units and "
                                                  "workers.")] = None,
) -> None:
    """Each worker's units done, accepted, rejected, soft rejected, and whether they are blocked."""
    with opened_runtime() as runtime, transaction(runtime.sessions) as session:
        task_id = None
        soft_blocks: dict[int, list[str]] = {}
        if task_name is not None:
            run_ids = resolve_runs(session, task_name=task_name, run_id=None)
            task_id = session.scalar(select(Task.id).where(Task.task_name == task_name))
            soft_blocks = _soft_blocks(session, run_ids)
        histories = worker_histories(session, task_id=task_id)
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


def _soft_blocks(session: Session, run_ids: list[int]) -> dict[int, list[str]]:
    """Workers holding the block_qualification of one of the runs: worker id -> qualification names."""
    names = set()
    for config in session.scalars(select(TaskRun.config).where(TaskRun.id.in_(run_ids))):
        name = RunConfig.parse(config).blueprint.block_qualification
        if name:
            names.add(str(name))
    held: dict[int, list[str]] = {}
    rows = session.execute(
        select(GrantedQualification.worker_id, Qualification.name)
        .join(Qualification, Qualification.id == GrantedQualification.qualification_id)
        .where(Qualification.name.in_(sorted(names)))
    )
    for worker_id, name in rows:
        held.setdefault(int(worker_id), []).append(name)
    return held


@workers_app.command("block")
def block(
    worker: WorkerArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (the provider may show it).")] = DEFAULT_BLOCK_REASON,
    qualification: Annotated[str | None, typer.Option(
        "--qualification", help="Block only from tasks with this block_qualification (grants it).")] = None,
    provider: ProviderOption = None,
) -> None:
    """Block a worker from every task (and on the provider), or from the tasks of one block qualification."""
    with opened_runtime() as runtime:
        with transaction(runtime.sessions) as session:
            found = find_worker(session, worker, provider)
            if qualification is not None:
                qualification_id, _ = create_qualification(session, qualification, now=_now())
                grant(session, qualification_id, found.id, 1, now=_now())
                calls = pending_worker_calls(session, found.id)  # the grant, copied to MTurk
                message = f"worker {worker} blocked from tasks whose block_qualification is {qualification!r}"
            else:
                call_id = block_worker(session, found.id, reason, now=_now())
                calls = [call_id] if call_id is not None else []
                message = (f"worker {worker} blocked from every task" if call_id is not None
                           else f"worker {worker} was already blocked")
        console.print(message, highlight=False)
        dispatch_calls(runtime, calls)


@workers_app.command("unblock")
def unblock(
    worker: WorkerArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (the provider may show it).")] = "unblocked",
    qualification: Annotated[str | None, typer.Option(
        "--qualification", help="Lift only this block qualification (revokes it).")] = None,
    provider: ProviderOption = None,
) -> None:
    """Lift a worker's block (everywhere, or one block qualification)."""
    with opened_runtime() as runtime:
        with transaction(runtime.sessions) as session:
            found = find_worker(session, worker, provider)
            if qualification is not None:
                if not revoke(session, find_qualification(session, qualification).id, found.id):
                    fail(f"worker {worker} does not hold {qualification!r}")
                calls = pending_worker_calls(session, found.id)  # the revoke, copied to MTurk
                message = f"worker {worker} no longer blocked by {qualification!r}"
            else:
                call_id = unblock_worker(session, found.id, reason, now=_now())
                calls = [call_id] if call_id is not None else []
                message = (f"worker {worker} unblocked" if call_id is not None
                           else f"worker {worker} was not blocked")
        console.print(message, highlight=False)
        dispatch_calls(runtime, calls)


@workers_app.command("clear-onboarding")
def clear_onboarding_command(
    worker: WorkerArg,
    qualification: Annotated[str, typer.Option("--qualification", help="The task's onboarding_qualification.")],
    provider: ProviderOption = None,
) -> None:
    """Let a worker take onboarding again: removes <NAME> and <NAME>-failed."""
    with opened_runtime() as runtime:
        with transaction(runtime.sessions) as session:
            found = find_worker(session, worker, provider)
            name = check_name(qualification)
            known = session.scalar(select(Qualification.id).where(
                Qualification.name.in_([name, name + FAILED_SUFFIX])).limit(1))
            if known is None:
                raise NotFoundError(f"no qualification named {name!r} or {name + FAILED_SUFFIX!r}")
            removed = clear_onboarding(session, found.id, name)
            calls = pending_worker_calls(session, found.id)  # the revokes, copied to MTurk
        dispatch_calls(runtime, calls)
    if removed:
        console.print(f"removed {', '.join(removed)} from worker {worker}", highlight=False)
    else:
        console.print(f"worker {worker} held neither {name!r} nor {name + FAILED_SUFFIX!r}; nothing to clear",
                      highlight=False)


# -- qualifications ----------------------------------------------------------------------------------


@qualifications_app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(help="Show who holds this qualification.")] = None,
) -> None:
    """Every qualification with how many workers hold it, or the holders of one."""
    with opened_runtime() as runtime, transaction(runtime.sessions) as session:
        if name is None:
            summaries = list_qualifications(session)
            grants = None
        else:
            grants = list_grants(session, find_qualification(session, name).id)
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
def create(name: Annotated[str, typer.Argument(help="The new qualification's name.")]) -> None:
    """Create a qualification (granting needs one that exists)."""
    with opened_runtime() as runtime, transaction(runtime.sessions) as session:
        _, created = create_qualification(session, name, now=_now())
    console.print(f"qualification {name!r} " + ("created" if created else "already exists"), highlight=False)


@qualifications_app.command("grant")
def grant_command(
    name: Annotated[str, typer.Argument(help="The qualification.")],
    worker: WorkerArg,
    value: Annotated[str, typer.Option("--value", help="Whole number the worker holds.")] = "1",
    provider: ProviderOption = None,
) -> None:
    """Give a worker a qualification (or change the value they hold)."""
    number = _parse_value(value)
    with opened_runtime() as runtime:
        with transaction(runtime.sessions) as session:
            qualification = find_qualification(session, name)
            found = find_worker(session, worker, provider)
            grant(session, qualification.id, found.id, number, now=_now())
            calls = pending_worker_calls(session, found.id)
        dispatch_calls(runtime, calls)
    console.print(f"granted {name}={number} to worker {worker}", highlight=False)


@qualifications_app.command("revoke")
def revoke_command(
    name: Annotated[str, typer.Argument(help="The qualification.")],
    worker: WorkerArg,
    provider: ProviderOption = None,
) -> None:
    """Take a qualification away from a worker."""
    with opened_runtime() as runtime:
        with transaction(runtime.sessions) as session:
            qualification = find_qualification(session, name)
            found = find_worker(session, worker, provider)
            if not revoke(session, qualification.id, found.id):
                fail(f"worker {worker} does not hold {name!r}")
            calls = pending_worker_calls(session, found.id)
        dispatch_calls(runtime, calls)
    console.print(f"revoked {name} from worker {worker}", highlight=False)


@workers_app.command("notify")
def notify(
    workers: Annotated[list[str], typer.Argument(help="Worker names.")],
    subject: Annotated[str, typer.Option("--subject", help="The message's subject.")],
    message: Annotated[str, typer.Option("--message", help="The message.")],
    provider: ProviderOption = None,
) -> None:
    """Message workers through their provider (MTurk's NotifyWorkers), as ledger calls sent by Celery."""
    with opened_runtime() as runtime:
        with transaction(runtime.sessions) as session:
            calls = [record_notification(session, find_worker(session, name, provider).id, subject, message,
                                         now=_now()) for name in workers]
        dispatch_calls(runtime, calls)
    console.print(f"{len(calls)} notification(s) recorded and sent", highlight=False)
