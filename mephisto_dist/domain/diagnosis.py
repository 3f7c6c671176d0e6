"""Why a run is not progressing, in plain words: a pure function of what ``status`` gathered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RunFacts:
    is_completed: bool
    shutdown_reason: str | None
    created: int
    launched: int
    assigned: int
    cap: int
    held: int | None  # None: Redis did not answer
    oldest_assigned_at: datetime | None
    server_url: str | None
    server_answers: bool | None  # None: the architect runs no server
    workers_seen: bool | None = None  # a Celery worker answered a ping (None: not checked)
    run_id: int = 0
    embedded: bool = False
    """Redis is the embedded one: it, the Celery worker and beat live only inside an attached
    ``mephisto-dist run`` (or ``resume``), so Redis not answering means no such command runs."""
    open_units: int = 0
    """Units not submitted nor expired: what ``shutdown`` would expire."""


def _minutes(since: datetime, now: datetime) -> str:
    return ago((now - since).total_seconds())


def ago(age_s: float) -> str:
    """``42 s``, ``5 min``, ``3 h 10 min``, ``2 days``: how long ago, in the words status uses."""
    seconds = int(age_s)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


@dataclass(frozen=True)
class ProcessFacts:
    """Heartbeat ages in seconds of the deployment's Celery workers and beat, youngest first (empty:
    never seen, or forgotten after a week); ``None``: Redis did not answer."""

    worker_ages_s: list[float] | None
    beat_ages_s: list[float] | None
    stale_after_s: float
    queued: int | None = None
    """Tasks in Celery's default queue that no worker has taken (``None``: not counted)."""


QUEUE_BACKLOG = 100
"""Tasks waiting in the default queue beyond which ``status`` asks whether the workers still take any: a
healthy worker takes beat's sweeps and the launches within seconds."""


def diagnose_processes(facts: ProcessFacts) -> list[str]:
    """Plain sentences for a missing worker or beat; empty when both run."""
    found: list[str] = []
    if facts.worker_ages_s is not None:
        if not facts.worker_ages_s:
            found.append("no Celery worker has been seen: nothing launches, submits are not processed; "
                         "start one with celery -A mephisto_dist.celery.worker worker")
        elif facts.worker_ages_s[0] > facts.stale_after_s:
            found.append(f"no Celery worker answers: the last one was seen {ago(facts.worker_ages_s[0])} ago; "
                         f"start one with celery -A mephisto_dist.celery.worker worker")
        elif facts.queued is not None and facts.queued >= QUEUE_BACKLOG:
            found.append(f"{facts.queued} tasks wait in the queue although a Celery worker answers: if the number "
                         f"grows from one `status` to the next, the workers take nothing (a worker can stop "
                         f"taking tasks after Redis went away and came back); restart them")
    if facts.beat_ages_s is not None:
        if not facts.beat_ages_s:
            found.append("beat is not running (never seen): overdue units, leaked tokens, orphaned HITs and "
                         "servers are not reconciled; start it with celery -A mephisto_dist.celery.beat beat")
        elif facts.beat_ages_s[0] > facts.stale_after_s:
            found.append(f"beat is not running: last seen {ago(facts.beat_ages_s[0])} ago; overdue units, "
                         f"orphaned HITs and servers are not reconciled; start it with celery -A mephisto_dist.celery.beat beat")
    return found


def workers_answer(facts: ProcessFacts) -> bool | None:
    if facts.worker_ages_s is None:
        return None
    return bool(facts.worker_ages_s) and facts.worker_ages_s[0] <= facts.stale_after_s


def _way_on(facts: RunFacts) -> str:
    if facts.shutdown_reason is not None:
        return (f"`mephisto-dist resume {facts.run_id}` lets the units in flight be finished, or "
                f"`mephisto-dist shutdown {facts.run_id} --force` ends the run now")
    return (f"`mephisto-dist resume {facts.run_id}` starts them again and carries on (completed work is kept), "
            f"or `mephisto-dist shutdown {facts.run_id}` ends the run ({facts.open_units} unit(s) not submitted "
            f"would expire)")


def diagnose(facts: RunFacts, *, now: datetime) -> list[str]:
    """Plain sentences for what holds the run up; empty when nothing does."""
    found: list[str] = []
    if facts.is_completed:
        return ["the run is complete"]
    if facts.shutdown_reason is not None:
        found.append(f"the run is stopping ({facts.shutdown_reason}); waiting on {facts.assigned} "
                     f"unit(s) in flight")
    unattended = facts.embedded and facts.held is None
    if unattended:
        found.append(f"no `mephisto-dist run` is serving task run {facts.run_id} now (its command was stopped or "
                     f"its terminal closed): the server, Redis, the Celery worker and beat went with it")
        found.append(_way_on(facts))
        return found
    if facts.server_answers is False:
        found.append(f"the server at {facts.server_url} does not answer: if the `mephisto-dist run` that served "
                     f"it was stopped, {_way_on(facts)}; a deployment's web process: start "
                     f"`mephisto-dist web --run {facts.run_id}` again")
    if facts.held is None:
        found.append("Redis does not answer: no unit can launch and limits cannot be checked")
    if facts.created and not facts.launched and facts.shutdown_reason is None:
        if facts.cap and facts.held is not None and facts.held >= facts.cap:
            oldest = (f", oldest assigned {_minutes(facts.oldest_assigned_at, now)} ago"
                      if facts.oldest_assigned_at else "")
            found.append(f"no unit launched: the cap of {facts.cap} is held by {facts.held} "
                         f"{'assigned' if facts.assigned else 'launched or assigned'} units{oldest}")
        elif facts.workers_seen is False:
            found.append(f"{facts.created} unit(s) wait to launch but no Celery worker answers: "
                         f"start one with celery -A mephisto_dist.celery.worker worker")
        else:
            found.append(f"{facts.created} unit(s) wait to launch")
    if not facts.launched and facts.shutdown_reason is None and facts.assigned:
        found.append("the provider hosts 0 available units: new workers get nothing until a unit is "
                     "submitted or returned")
    return found
