"""When a provider call that failed or went unanswered is sent again, and when it is given up (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta

MAX_RETRY_DELAY_S = 600.0


def retry_delay_s(attempts: int, base_s: float) -> float:
    """The wait after the ``attempts``-th send failed: ``base_s``, doubling with each attempt, capped."""
    return min(MAX_RETRY_DELAY_S, base_s * 2.0 ** max(0, attempts - 1))


def out_of_attempts(attempts: int, max_attempts: int) -> bool:
    """Whether a call sent ``attempts`` times may be sent no more (it is marked failed instead)."""
    return attempts >= max_attempts


def retry_at(attempts: int, base_s: float, *, now: datetime) -> datetime:
    return now + timedelta(seconds=retry_delay_s(attempts, base_s))
