"""Assignments whose agents work together (a task script's concurrent TaskRunner): when one may start,
and how long its first agents wait for the others. Pure: no I/O, ``now`` is a parameter."""

from __future__ import annotations

from datetime import datetime, timedelta


def ready_to_start(units: int, waiting_agents: int) -> bool:
    """Every unit of the assignment has an agent waiting for the others (Mephisto's ``WorkerPool`` starts
    the assignment on the claim that completes it)."""
    return units > 0 and waiting_agents >= units


def partner_wait_over(waiting_since: datetime, now: datetime, wait_s: int) -> bool:
    """Whether an agent that has waited since ``waiting_since`` has waited long enough to be released;
    ``wait_s`` 0 waits as long as its page stays (Mephisto has no limit)."""
    return wait_s > 0 and now - waiting_since >= timedelta(seconds=wait_s)
