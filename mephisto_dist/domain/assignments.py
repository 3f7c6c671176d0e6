"""Assignments a task script's TaskRunner hosts: when one whose agents work together may start, how long
its first agents wait for the others, and how long its agents have to submit once it ended. Pure: no I/O,
``now`` is a parameter."""

from __future__ import annotations

from datetime import datetime, timedelta


def ready_to_start(units: int, waiting_agents: int) -> bool:
    """Every unit of the assignment has an agent waiting for the others (Mephisto's ``WorkerPool`` starts
    the assignment on the claim that completes it)."""
    return units > 0 and waiting_agents >= units


def partner_wait_cutoff(now: datetime, wait_s: int) -> datetime | None:
    """Agents waiting since before this moment have waited long enough to be released; None when
    ``wait_s`` is 0: they wait as long as their page stays (Mephisto has no limit)."""
    return now - timedelta(seconds=wait_s) if wait_s > 0 else None


def submissions_overdue(ended_at: datetime, timeout_s: int, now: datetime) -> bool:
    """The assignment's runner returned at ``ended_at``: its agents that have not submitted by ``timeout_s``
    later time out (Mephisto's ``submission_timeout``, the ``await_submit(timeout)`` after
    ``run_assignment``; 0: at once)."""
    return now >= ended_at + timedelta(seconds=max(0, timeout_s))


def unit_after_time_out(units_in_assignment: int, stopping: bool) -> bool:
    """Whether a timed-out agent's unit goes back to the pool (True) or expires: a unit of an assignment
    worked together cannot be taken up alone once its conversation is over (Mephisto expires it, as an
    absent agent's), and nothing is relaunched for a run that is stopping."""
    return units_in_assignment == 1 and not stopping
