"""``mephisto-dist review``: go through completed units worker by worker (interactive, reading stdin, so it
can be driven by a pipe), or decide units in one go (``review approve|reject|soft-reject``).

Decisions are committed first; their provider side effects (pay, reject, bonus, block) are sent after the
commit as Celery tasks, or carried out here when no Redis is configured (the embedded default has no
shared workers outside a live run). Either way the ledger makes each happen once.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.json import JSON
from rich.prompt import Prompt

from mephisto_dist.cli.console import console, err_console, fail
from mephisto_dist.cli.runtime import open_runtime
from mephisto_dist.errors import MephistoDistError
from mephisto_dist.queue import send_outbox
from mephisto_dist.review import reviewing
from mephisto_dist.review.decisions import (
    AlreadyDecided,
    Decision,
    FailedCall,
    NotReviewable,
    Reviewed,
    WorkerHistory,
    check_decision,
    parse_bonus,
)
from mephisto_dist.review.sending import send_calls
from mephisto_dist.runs.failed_launches import failed_unit_launches, resend_failed_launches
from mephisto_dist.runs.launches import FailedLaunch
from mephisto_dist.runtime import Runtime

review_app = typer.Typer(
    help="Review completed units: approve, soft reject, reject (with a reason), bonus, block. With only "
         "--task-name NAME or --run RUN_ID, go through them worker by worker, answering on stdin; the "
         "subcommands decide units in one go.",
    invoke_without_command=True,
    no_args_is_help=False,
)

TaskNameOption = Annotated[str | None, typer.Option("--task-name", metavar="TASK_NAME",
                                                    help="Every run of this task_name.")]
RunOption = Annotated[int | None, typer.Option("--run", metavar="RUN_ID", help="One task run.")]
UnitIds = Annotated[list[str] | None, typer.Argument(metavar="UNIT_ID", help="Units to decide.")]
AllCompleted = Annotated[bool, typer.Option(
    "--all-completed", help="Every completed unit of --run / --task-name.")]
ReasonOption = Annotated[str | None, typer.Option("--reason", metavar="TEXT", help="Note kept with the decision; shown "
                                                  "to the worker for a rejection or a bonus.")]
SHOWN_IDS = 20
SHOWN_FAILURES = 20


def _now() -> datetime:
    return datetime.now(UTC)


def reviewer() -> str:
    """Who decides from a command: the login of the user who typed it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container's numeric user)
        return f"cli:uid {os.getuid()}"


def dispatch_calls(runtime: Runtime, call_ids: Sequence[int]) -> None:
    """Send provider calls to the Celery workers, or make them here when no Redis is configured."""
    for sentence in send_calls(runtime, call_ids):
        err_console.print(f"[yellow]warning:[/] {sentence}", highlight=False)


def _parse_unit_ids(raw: Sequence[str]) -> list[int]:
    ids = []
    for text in raw:
        if not text.strip().isdigit():
            fail(f"unit id {text!r} is not a number")
        ids.append(int(text))
    return list(dict.fromkeys(ids))


def _id_list(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def _decide_command(decision: Decision, unit_ids: list[str] | None, all_completed: bool, run: int | None,
                    task_name: str | None, bonus: str | None, reason: str | None) -> None:
    if bool(unit_ids) == all_completed:
        fail("give UNIT_ID... or --all-completed (with --run RUN_ID or --task-name NAME), not both")
    if all_completed and (run is None) == (task_name is None):
        fail("--all-completed needs exactly one of --run RUN_ID or --task-name NAME")
    if not all_completed and (run is not None or task_name is not None):
        fail("--run / --task-name only go with --all-completed")
    amount = parse_bonus(bonus) if bonus is not None else None
    check_decision(decision, reason, amount)
    ids = _parse_unit_ids(unit_ids or [])
    runtime = open_runtime()
    try:
        now = _now()
        if all_completed:
            decided = reviewing.decide_completed(runtime.sessions, decision, task_name=task_name, run_id=run,
                                                 now=now, note=reason, bonus=amount, by=reviewer())
        else:
            decided = reviewing.decide_units(runtime.sessions, decision, ids, now=now, note=reason, bonus=amount,
                                             by=reviewer())
        reviewed, skipped = decided.reviewed, decided.skipped
        _report(reviewed, skipped)
        dispatch_calls(runtime, [c for r in reviewed for c in r.call_ids])
    finally:
        runtime.close()


def _report(reviewed: Sequence[Reviewed], skipped: Sequence[str]) -> None:
    by_status: dict[str, list[int]] = {}
    for r in reviewed:
        by_status.setdefault(r.status.value, []).append(r.unit_id)
    for status, ids in by_status.items():
        console.print(f"{status}: {len(ids)} unit(s): {_id_list(ids)}", highlight=False)
    bonuses = [r for r in reviewed if r.bonus]
    if bonuses:
        console.print(f"bonus of ${bonuses[0].bonus:.2f} queued for {len(bonuses)} unit(s)", highlight=False)
    if not reviewed:
        console.print("no units were decided", highlight=False)
    for message in skipped:
        err_console.print(f"skipped: {message}", highlight=False)


@review_app.callback()
def review(ctx: typer.Context, task_name: TaskNameOption = None, run: RunOption = None) -> None:
    """Go through completed units worker by worker and decide each (reads answers from stdin)."""
    if ctx.invoked_subcommand is not None:
        if task_name is not None or run is not None:
            fail(f"put --task-name / --run after the subcommand: review {ctx.invoked_subcommand} ... --run N")
        return
    if (task_name is None) == (run is None):
        fail("give exactly one of --task-name NAME or --run RUN_ID")
    runtime = open_runtime()
    try:
        _Session(runtime, reviewing.run_ids_of(runtime.sessions, task_name=task_name, run_id=run)).go()
    finally:
        runtime.close()


@review_app.command("approve")
def approve(unit_ids: UnitIds = None, all_completed: AllCompleted = False, run: RunOption = None,
            task_name: TaskNameOption = None,
            bonus: Annotated[str | None, typer.Option("--bonus", metavar="DOLLARS",
                                                      help="Bonus per unit, in dollars.")] = None,
            reason: ReasonOption = None) -> None:
    """Approve units (completed, or rejected: an approval overrides a rejection), with an optional bonus."""
    _decide_command(Decision.APPROVE, unit_ids, all_completed, run, task_name, bonus, reason)


@review_app.command("reject")
def reject(unit_ids: UnitIds = None, all_completed: AllCompleted = False, run: RunOption = None,
           task_name: TaskNameOption = None, reason: ReasonOption = None) -> None:
    """Reject completed units (unpaid); --reason is required and shown to the worker."""
    _decide_command(Decision.REJECT, unit_ids, all_completed, run, task_name, None, reason)


@review_app.command("soft-reject")
def soft_reject(unit_ids: UnitIds = None, all_completed: AllCompleted = False, run: RunOption = None,
                task_name: TaskNameOption = None, reason: ReasonOption = None) -> None:
    """Soft-reject completed units: paid, but recorded as poor work."""
    _decide_command(Decision.SOFT_REJECT, unit_ids, all_completed, run, task_name, None, reason)


@review_app.command("resend")
def resend(run: RunOption = None) -> None:
    """Send again the provider calls that were never carried out (queueing failed, or a worker died) or
    that failed every attempt, and the launches of units and the TaskRunner events (outbox messages) that
    failed every attempt."""
    runtime = open_runtime()
    try:
        again = reviewing.calls_and_events_to_resend(runtime.sessions, run, now=_now())
        launches = resend_failed_launches(runtime, None if run is None else [run])
        dispatch_calls(runtime, again.call_ids)
        send_outbox(runtime.queue, list(again.message_ids))
        console.print(f"{len(again.call_ids)} provider call(s) sent again; "
                      f"{launches} failed unit launch(es) sent again; "
                      f"{len(again.message_ids)} failed TaskRunner event(s) sent again", highlight=False)
    finally:
        runtime.close()


# -- the interactive review --------------------------------------------------------------------------

CHOICES = {
    "a": "approve", "p": "approve and pay a bonus", "s": "soft reject", "r": "reject",
    "b": "block worker", "n": "next (decide later)", "q": "quit",
}
_DECISIONS = {"a": Decision.APPROVE, "p": Decision.APPROVE, "s": Decision.SOFT_REJECT, "r": Decision.REJECT}


@dataclass
class _Session:
    runtime: Runtime
    run_ids: list[int]
    decided: int = 0
    calls: list[int] = field(default_factory=list)

    def go(self) -> None:
        queue = reviewing.review_queue(self.runtime.sessions, self.run_ids)
        groups = queue.groups
        show_failures(failed_unit_launches(self.runtime, self.run_ids), queue.failed_calls)
        if not groups:
            console.print("no completed units to review", highlight=False)
            return
        total = sum(len(units) for _, units in groups)
        console.print(f"{total} completed unit(s) from {len(groups)} worker(s) to review", highlight=False)
        console.print("choices: " + ", ".join(f"{k} = {v}" for k, v in CHOICES.items()), highlight=False)
        try:
            for worker_id, unit_ids in groups:
                if not self._review_worker(worker_id, unit_ids):
                    break
        except (EOFError, KeyboardInterrupt):
            console.print("\nreview stopped (end of input)", highlight=False)
        console.print(f"{self.decided} unit(s) decided", highlight=False)

    def _history(self, worker_id: int) -> WorkerHistory:
        return reviewing.worker_history(self.runtime.sessions, worker_id)

    def _review_worker(self, worker_id: int, unit_ids: list[int]) -> bool:
        """Go through one worker's units; ``False`` when the reviewer quits."""
        h = self._history(worker_id)
        console.rule(f"worker {h.worker_name} ({h.provider_type})")
        console.print(f"history (all tasks): {h.submitted} submitted, {h.accepted} accepted, {h.rejected} "
                      f"rejected, {h.soft_rejected} soft rejected"
                      + (f"; BLOCKED ({h.block_reason})" if h.is_blocked else ""), highlight=False)
        remaining = list(unit_ids)
        while remaining:
            self._show(remaining[0], len(unit_ids) - len(remaining) + 1, len(unit_ids))
            choice = _ask("decision", choices=list(CHOICES)).lower()
            if choice == "q":
                return False
            if choice == "n":
                remaining.pop(0)
                continue
            if choice == "b":
                self._block(worker_id, remaining[0])
                continue
            scope = remaining[:1]
            if len(remaining) > 1:
                which = _ask(f"apply to this unit or to all {len(remaining)} remaining of "
                             f"{h.worker_name}'s units", choices=["one", "all"], default="one")
                scope = list(remaining) if which == "all" else scope
            self._apply(choice, scope)
            remaining = [u for u in remaining if u not in scope]
        return True

    def _show(self, unit_id: int, position: int, count: int) -> None:
        view = reviewing.unit_for_review(self.runtime.sessions, unit_id)
        console.print(f"\nunit {view.unit_id} (run {view.task_run_id}, {view.status}), {position} of {count}",
                      highlight=False)
        console.print("inputs:")
        console.print(JSON.from_data(dict(view.inputs), default=str))
        console.print("outputs:")
        console.print(JSON.from_data(None if view.outputs is None else dict(view.outputs), default=str))
        if view.metadata:
            console.print("tips and feedback:")
            console.print(JSON.from_data(dict(view.metadata), default=str))

    def _apply(self, choice: str, unit_ids: list[int]) -> None:
        decision = _DECISIONS[choice]
        bonus: float | None = None
        note: str | None = None
        if choice == "p":
            bonus = self._ask_bonus()
            note = _ask_text("reason for the bonus (shown to the worker)")
        elif choice == "r":
            note = _ask_text("reason for rejecting (shown to the worker)")
        elif choice == "s":
            note = _ask("note (Enter for none)", default="") or None
        for unit_id in unit_ids:
            try:
                reviewed = reviewing.decide_unit(self.runtime.sessions, unit_id, decision, now=_now(), note=note,
                                                 bonus=bonus, by=reviewer())
            except (AlreadyDecided, NotReviewable) as error:
                err_console.print(f"skipped: {error}", highlight=False)
                continue
            self.decided += 1
            console.print(f"unit {unit_id}: {reviewed.status.value}"
                          + (f" with a ${bonus:.2f} bonus" if bonus else ""), highlight=False)
            dispatch_calls(self.runtime, reviewed.call_ids)

    def _ask_bonus(self) -> float:
        while True:
            try:
                return parse_bonus(_ask("bonus per unit, in dollars", default=""))
            except MephistoDistError as error:
                err_console.print(f"{error}", highlight=False)

    def _block(self, worker_id: int, unit_id: int) -> None:
        """Block as Mephisto does: with the run's block_qualification when it has one, else everywhere."""
        reason = _ask_text("reason for blocking")
        blocked = reviewing.block_from_review(self.runtime.sessions, worker_id, unit_id, reason, now=_now())
        console.print(blocked.message, highlight=False)
        dispatch_calls(self.runtime, blocked.call_ids)


def show_failures(launches: Sequence[FailedLaunch], calls: Sequence[FailedCall]) -> None:
    """What failed every attempt and is not retried on its own: a line each (the provider's message),
    then the command that sends them again."""
    if not launches and not calls:
        return
    console.print(f"[red]{len(launches)} unit launch(es) and {len(calls)} provider call(s) failed every "
                  "attempt[/] and are not retried on their own:", highlight=False)
    lines = [f"  launch of unit {f.unit_id} (run {f.run_id}), {f.attempts} attempt(s): {f.error}" for f in launches]
    lines += [f"  {c.action} of worker {c.worker_name}"
              + (f" for unit {c.unit_id}" if c.unit_id is not None else "")
              + f" (run {c.run_id}), {c.attempts} attempt(s): {c.error}" for c in calls]
    for line in lines[:SHOWN_FAILURES]:
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    if len(lines) > SHOWN_FAILURES:
        console.print(f"  and {len(lines) - SHOWN_FAILURES} more", highlight=False)
    for run_id in sorted({f.run_id for f in launches} | {c.run_id for c in calls if c.run_id is not None}):
        console.print(f"send them again: mephisto-dist review resend --run {run_id}", highlight=False)


def _ask_text(question: str) -> str:
    while True:
        answer = _ask(question, default="")
        if answer:
            return answer
        err_console.print("an answer is needed", highlight=False)


def _ask(question: str, *, choices: list[str] | None = None, default: str | None = None) -> str:
    """One answer from stdin (a terminal or a pipe); ``EOFError`` at the end of the input."""
    if default is None:
        answer = Prompt.ask(question, console=console, choices=choices, case_sensitive=False)
    else:
        answer = Prompt.ask(question, console=console, choices=choices, case_sensitive=False, default=default,
                            show_default=bool(default))
    return str(answer).strip()
