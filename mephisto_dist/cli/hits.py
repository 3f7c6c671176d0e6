"""``hits outstanding`` and ``cleanup``: each requester's HITs on MTurk, which run and unit each belongs to
(and whether it is done, left over or an orphan), and expiring or deleting those no unit needs on demand;
likewise each study-based requester's studies (Prolific: one per run), stopped when their run is over.
HITs and studies another tool made are shown apart and touched only when named by id (``cleanup --hit
ID``). A requester that cannot be listed is named in one ``error:`` line and the others go on; the command
exits non-zero at the end."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from mephisto_dist.cli.console import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    console,
    err_console,
    exit_code_for,
    fail,
)
from mephisto_dist.cli.runtime import opened_runtime
from mephisto_dist.domain.hits import HitAction, HitDecision, HitStanding, decide_hit, orphan_reason, standing
from mephisto_dist.domain.studies import OPEN as OPEN_STUDY
from mephisto_dist.domain.studies import StudyAction, StudyDecision, decide_study
from mephisto_dist.domain.studies import orphan_reason as study_orphan_reason
from mephisto_dist.domain.studies import standing as study_standing
from mephisto_dist.errors import MephistoDistError
from mephisto_dist.providers.mturk.provider import MTurkProvider
from mephisto_dist.reconcile.hits import ListedHit, apply_decision, requester_providers, survey
from mephisto_dist.reconcile.studies import StudyAccount, SurveyedStudy, study_accounts, survey_studies
from mephisto_dist.reconcile.studies import apply_decision as apply_study_decision
from mephisto_dist.reconcile.unreceived import unreceived as unreceived_submissions
from mephisto_dist.runtime import Runtime

hits_app = typer.Typer(help="The crowd provider's HITs and studies.", no_args_is_help=True)
RequesterOption = Annotated[str | None, typer.Option("--requester", metavar="REQUESTER",
                                                     help="Only this registered requester.")]


def _providers(runtime: Runtime, requester: str | None) -> tuple[list[MTurkProvider], list[StudyAccount]]:
    """The MTurk requesters' providers and the study-based requesters' accounts (``requester``: its only)."""
    providers = requester_providers(runtime.sessions, runtime.settings.deployment)
    accounts = study_accounts(runtime.sessions, runtime.settings.deployment)
    if requester is not None:
        providers = [p for p in providers if p.access.requester_name == requester]
        accounts = [a for a in accounts if a.requester_name == requester]
        if not providers and not accounts:
            fail(f"no MTurk requester named {requester!r} is registered, nor a Prolific one (see mephisto-dist "
                 "requesters)", EXIT_NOT_FOUND)
    if not providers and not accounts:
        fail("no MTurk or Prolific requester is registered (mephisto-dist register mturk|mturk_sandbox|prolific "
             "name=NAME ...)")
    return providers, accounts


def _label(provider: MTurkProvider) -> str:
    return f"{provider.access.requester_name} ({provider.provider_type})"


def _each_requester(providers: Sequence[MTurkProvider], work: Callable[[MTurkProvider], None],
                    accounts: Sequence[StudyAccount] = (),
                    study_work: Callable[[StudyAccount], None] | None = None) -> int:
    """``work`` for every MTurk requester, then ``study_work`` for every study-based one; one that fails is
    named in one ``error:`` line and the others go on. The exit code: 0, else 3 when a service failed (an
    endpoint, the provider's answer), else the first failure's."""
    jobs: list[tuple[str, str, Callable[[], None]]] = [
        (p.access.requester_name, p.provider_type, lambda p=p: work(p)) for p in providers]  # type: ignore[misc]
    if study_work is not None:
        jobs += [(a.requester_name, a.provider_type, lambda a=a: study_work(a)) for a in accounts]  # type: ignore[misc]
    codes: list[int] = []
    for name, provider_type, job in jobs:
        try:
            job()
        except MephistoDistError as error:
            reason = str(error).removeprefix(f"requester {name!r}: ")  # the line names it already
            err_console.print(f"[bold red]error:[/] requester {name!r} ({provider_type}): {reason}",
                              highlight=False)
            codes.append(exit_code_for(error))
    if not codes:
        return EXIT_OK
    return EXIT_UNREACHABLE if EXIT_UNREACHABLE in codes else codes[0]


def _study_belongs(item: SurveyedStudy) -> str:
    if item.facts is None:
        return "foreign"
    where = f"run {item.study.run_id}"
    word = study_standing(item.facts)
    if word == HitStanding.LIVE:
        return where
    return f"{word.value} ({where}: {study_orphan_reason(item.facts)})"


def _study_table(title: str, items: Sequence[SurveyedStudy], extra: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("study", no_wrap=True)
    for column in ("name", "status", "places", "taken", "created", "belongs to"):
        table.add_column(column)
    if extra is not None:
        table.add_column("cleanup")
    for item in items:
        study = item.study
        created = f"{study.created_at:%Y-%m-%d %H:%M}" if study.created_at else "?"
        row = [study.study_id, study.name, study.status, str(study.total_places), str(study.places_taken), created,
               _study_belongs(item)]
        if extra is not None:
            row.append(extra.get(study.study_id, ""))
        table.add_row(*row)
    return table


def _belongs(item: ListedHit) -> str:
    if item.mark is None or not item.facts.ours:
        return "foreign"
    where = f"run {item.mark.run_id} unit {item.mark.unit_id}"
    word = standing(item.facts)
    if word == HitStanding.LIVE:
        return where
    if word == HitStanding.DONE:
        return f"done ({where}: {item.facts.unit_status})"
    return f"{word.value} ({where}: {orphan_reason(item.facts)})"


def _table(title: str, items: Sequence[ListedHit], extra: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("HIT", no_wrap=True)
    for column in ("status", "expires", "pending", "available", "completed", "belongs to"):
        table.add_column(column)
    if extra is not None:
        table.add_column("cleanup")
    for item in items:
        hit = item.hit
        row = [item.hit_id, str(hit.get("HITStatus")), f"{hit['Expiration']:%Y-%m-%d %H:%M}",
               str(hit.get("NumberOfAssignmentsPending", 0)), str(hit.get("NumberOfAssignmentsAvailable", 0)),
               str(hit.get("NumberOfAssignmentsCompleted", 0)), _belongs(item)]
        if extra is not None:
            row.append(extra.get(item.hit_id, ""))
        table.add_row(*row)
    return table


@hits_app.command("outstanding")
def outstanding(
    requester: RequesterOption = None,
    run: Annotated[int | None, typer.Option("--run", metavar="RUN_ID",
                                            help="Only HITs of this task run (by our mark).")] = None,
) -> None:
    """Every HIT of each requester's account with its status, assignments pending, available and completed,
    and the run and unit it belongs to: done (its unit is final), left over (its run finished) or orphan
    (its run or unit is gone). HITs other tools made are listed apart. A requester that cannot be listed is
    named in an error line and the others are still listed; the exit code is then 3 (2 for a registration
    to fix)."""
    now = datetime.now(UTC)

    def listing(runtime: Runtime, provider: MTurkProvider) -> None:
        listed = survey(runtime.sessions, provider, now=now)
        ours = [i for i in listed if i.facts.ours and (run is None or (i.mark and i.mark.run_id == run))]
        foreign = [i for i in listed if not i.facts.ours] if run is None else []
        console.print(_table(f"HITs of {_label(provider)}: {len(ours)} ours", ours))
        if foreign:
            console.print(_table(f"{len(foreign)} HIT(s) made by other tools (never touched by beat; "
                                 "cleanup --hit ID touches one)", foreign))

    def study_listing(runtime: Runtime, account: StudyAccount) -> None:
        listed = survey_studies(runtime.sessions, account)
        ours = [i for i in listed if i.facts is not None and (run is None or i.study.run_id == run)]
        foreign = [i for i in listed if i.facts is None] if run is None else []
        console.print(_study_table(f"Studies of {account.label}: {len(ours)} ours", ours))
        if foreign:
            console.print(_study_table(f"{len(foreign)} study(ies) made by other tools or deployments (never "
                                       "touched by beat; cleanup --hit ID stops one)", foreign))

    with opened_runtime() as runtime:
        providers, accounts = _providers(runtime, requester)
        code = _each_requester(providers, lambda provider: listing(runtime, provider),
                               accounts, lambda account: study_listing(runtime, account))
    if code != EXIT_OK:
        raise typer.Exit(code)


def _older(item: ListedHit, older_than_days: float | None, now: datetime) -> bool:
    created = item.hit.get("CreationTime")
    return older_than_days is None or created is None or created <= now - timedelta(days=older_than_days)


def _named(item: ListedHit) -> HitDecision | None:
    """What cleanup does to a HIT named by id, ours or not: expire it, then delete it once MTurk allows."""
    facts = item.facts
    if not facts.expired:
        return HitDecision(item.hit_id, "named by id", HitAction.EXPIRE)
    if facts.pending == 0 and facts.hit_status == "Reviewable":
        return HitDecision(item.hit_id, "named by id", HitAction.DELETE)
    return None


def cleanup(
    requester: RequesterOption = None,
    older_than: Annotated[float | None, typer.Option("--older-than", min=0, help="Only HITs created more "
                                                     "than DAYS days ago.", metavar="DAYS")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be done; do nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do it without asking.")] = False,
    hit: Annotated[list[str] | None, typer.Option("--hit", metavar="HIT_ID", help="Also this HIT or study, by id "
                                                  "(may be another tool's).")] = None,
) -> None:
    """Expire HITs no unit needs any more (done, left over or orphan), and delete expired ones with nothing
    pending and every submission reviewed; stop studies still open whose run is over or gone. A requester
    that cannot be listed is named in an error line and the others are still cleaned; the exit code is then
    3 (2 for a registration to fix)."""
    now = datetime.now(UTC)
    named = set(hit or [])

    def clean(runtime: Runtime, provider: MTurkProvider) -> None:
        listed = survey(runtime.sessions, provider, now=now)
        plan: list[tuple[ListedHit, HitDecision]] = []
        for item in listed:
            decision = _named(item) if item.hit_id in named else (
                decide_hit(item.facts) if _older(item, older_than, now) else None)
            if decision is not None:
                plan.append((item, decision))
        named.difference_update(item.hit_id for item in listed)
        _show_and_apply(runtime, provider, listed, plan, dry_run=dry_run, yes=yes, now=now)

    def clean_studies(runtime: Runtime, account: StudyAccount) -> None:
        listed = survey_studies(runtime.sessions, account)
        plan: list[tuple[SurveyedStudy, StudyDecision]] = []
        for item in listed:
            decision = _named_study(item) if item.study.study_id in named else (
                _stop_only(item) if _study_older(item, older_than, now) else None)
            if decision is not None:
                plan.append((item, decision))
        named.difference_update(item.study.study_id for item in listed)
        _show_and_stop(runtime, account, listed, plan, dry_run=dry_run, yes=yes, now=now)

    with opened_runtime() as runtime:
        providers, accounts = _providers(runtime, requester)
        code = _each_requester(providers, lambda provider: clean(runtime, provider),
                               accounts, lambda account: clean_studies(runtime, account))
    if named:
        where = "accounts that answered" if code else "requester's account"
        err_console.print(f"[bold red]error:[/] no such HIT on the {where}: {', '.join(sorted(named))}",
                          highlight=False)
    if code != EXIT_OK or named:
        raise typer.Exit(code or EXIT_NOT_FOUND)


def _show_and_apply(runtime: Runtime, provider: MTurkProvider, listed: Sequence[ListedHit],
                    plan: Sequence[tuple[ListedHit, HitDecision]], *, dry_run: bool, yes: bool,
                    now: datetime) -> None:
    name = _label(provider)
    actions = {item.hit_id: decision.action.value for item, decision in plan}
    ours = [item for item, _ in plan if item.facts.ours]
    foreign_named = [item for item, _ in plan if not item.facts.ours]
    foreign = [i for i in listed if not i.facts.ours and i.hit_id not in actions]
    if not plan:
        console.print(f"{name}: no HIT to expire or delete")
    else:
        console.print(_table(f"{name}: {len(plan)} HIT(s) to clean up", [*ours, *foreign_named], actions))
    if foreign:
        console.print(f"{len(foreign)} HIT(s) made by other tools left alone (name one with --hit ID)")
    if not plan or dry_run:
        if plan:
            console.print("dry run: nothing was changed")
        return
    if not yes and not typer.confirm(f"expire or delete these {len(plan)} HIT(s)?"):
        err_console.print("nothing was changed")
        return
    done = {HitAction.EXPIRE: 0, HitAction.DELETE: 0}
    for item, decision in plan:
        if apply_decision(runtime.sessions, provider, decision, item.mark.run_id if item.mark else None, now=now,
                          reconciler="cleanup"):
            done[decision.action] += 1
    console.print(f"{name}: {done[HitAction.EXPIRE]} HIT(s) expired, {done[HitAction.DELETE]} deleted"
                  + ("" if sum(done.values()) == len(plan) else
                     f"; {len(plan) - sum(done.values())} failed (see mephisto-dist reconciled)"))


def _study_older(item: SurveyedStudy, older_than_days: float | None, now: datetime) -> bool:
    created = item.study.created_at
    return older_than_days is None or created is None or created <= now - timedelta(days=older_than_days)


def _stop_only(item: SurveyedStudy) -> StudyDecision | None:
    """What cleanup does to a study of ours: stop it when its run is over or gone (places are beat's)."""
    decision = decide_study(item.facts) if item.facts is not None else None
    return decision if decision is not None and decision.action == StudyAction.STOP else None


def _named_study(item: SurveyedStudy) -> StudyDecision | None:
    if item.study.status not in OPEN_STUDY:
        return None
    return StudyDecision(item.study.study_id, "named by id", StudyAction.STOP)


def _show_and_stop(runtime: Runtime, account: StudyAccount, listed: Sequence[SurveyedStudy],
                   plan: Sequence[tuple[SurveyedStudy, StudyDecision]], *, dry_run: bool, yes: bool,
                   now: datetime) -> None:
    name = account.label
    actions = {item.study.study_id: decision.action.value for item, decision in plan}
    foreign = [i for i in listed if i.facts is None and i.study.study_id not in actions]
    if not plan:
        console.print(f"{name}: no study to stop")
    else:
        console.print(_study_table(f"{name}: {len(plan)} study(ies) to stop", [item for item, _ in plan], actions))
    if foreign:
        console.print(f"{len(foreign)} study(ies) made by other tools left alone (name one with --hit ID)")
    if not plan or dry_run:
        if plan:
            console.print("dry run: nothing was changed")
        return
    if not yes and not typer.confirm(f"stop these {len(plan)} study(ies)?"):
        err_console.print("nothing was changed")
        return
    stopped = sum(1 for item, decision in plan if apply_study_decision(
        runtime.sessions, account, decision, item.study.run_id, now=now, reconciler="cleanup"))
    console.print(f"{name}: {stopped} study(ies) stopped" + (
        "" if stopped == len(plan) else f"; {len(plan) - stopped} failed (see mephisto-dist reconciled)"))


@hits_app.command("unreceived")
def unreceived(
    run: Annotated[int | None, typer.Option("--run", metavar="RUN_ID",
                                            help="Only submissions of this task run.")] = None,
) -> None:
    """Assignments submitted on MTurk (or submissions completed on Prolific) that never reached us, recorded
    by beat (with MTurk's answer; Prolific holds none), for review: approve or reject them on the provider;
    an MTurk HIT is deleted once every one is reviewed."""
    with opened_runtime() as runtime:
        rows = unreceived_submissions(runtime.sessions, run)
    if not rows:
        console.print("no submission is missing: every one MTurk holds reached us")
        return
    from mephisto_dist.providers import provider_class

    on = "MTurk" if all(provider_class(row.provider_type).is_hit_based for row in rows) else "the provider"
    table = Table(title=f"{len(rows)} submission(s) on {on} that never reached us")
    for column in ("assignment", "worker", "HIT", "run / unit", "on MTurk", "submitted", "answer"):
        table.add_column(column, no_wrap=column in ("assignment", "worker", "HIT"))
    for row in rows:
        where = f"run {row.task_run_id} unit {row.unit_id}" if row.task_run_id else "(run gone)"
        submitted = f"{row.submitted_at:%Y-%m-%d %H:%M}" if row.submitted_at else "?"
        table.add_row(row.assignment_id, row.worker_name, row.hit_id, where, row.provider_status, submitted,
                      answer_fields(row.answer) if row.answer else "(on the provider only)")
    console.print(table)


_ANSWER = re.compile(r"<QuestionIdentifier>(.*?)</QuestionIdentifier>\s*<FreeText>(.*?)</FreeText>", re.DOTALL)


def answer_fields(answer: str | None) -> str:
    """MTurk's QuestionFormAnswers XML as ``field=value`` pairs (the XML itself when it has none)."""
    pairs = [f"{html.unescape(name)}={html.unescape(value)}" for name, value in _ANSWER.findall(answer or "")]
    return ", ".join(pairs) if pairs else (answer or "")[:200]
