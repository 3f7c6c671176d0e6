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


def _minutes(since: datetime, now: datetime) -> str:
    minutes = int((now - since).total_seconds() // 60)
    return f"{minutes} min" if minutes else f"{int((now - since).total_seconds())} s"


def diagnose(facts: RunFacts, *, now: datetime) -> list[str]:
    """Plain sentences for what holds the run up; empty when nothing does."""
    found: list[str] = []
    if facts.is_completed:
        return ["the run is complete"]
    if facts.shutdown_reason is not None:
        found.append(f"the run is stopping ({facts.shutdown_reason}); waiting on {facts.assigned} "
                     f"unit(s) in flight")
    if facts.server_answers is False:
        found.append(f"the server at {facts.server_url} does not answer")
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
                         f"start one with celery -A workers worker")
        else:
            found.append(f"{facts.created} unit(s) wait to launch")
    if not facts.launched and facts.shutdown_reason is None and facts.assigned:
        found.append("the provider hosts 0 available units: new workers get nothing until a unit is "
                     "submitted or returned")
    return found
