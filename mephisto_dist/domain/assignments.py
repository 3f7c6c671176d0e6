"""Assignments whose agents work together (a task script's concurrent TaskRunner): when one may start,
and how long its first agents wait for the others. Pure: no I/O, ``now`` is a parameter."""

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
