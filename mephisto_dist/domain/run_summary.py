"""How ``status`` words a run's progress: its state, then completed and expired units counted apart
(an expired unit is not done work)."""

from __future__ import annotations

from collections.abc import Mapping

from mephisto_dist.domain.status import UNIT_SUBMITTED, UnitStatus


def run_state(*, finished: bool, stopping_reason: str | None) -> str:
    if finished:
        return "finished"
    if stopping_reason is not None:
        return f"stopping ({stopping_reason})" if stopping_reason else "stopping"
    return "running"


def unit_progress(counts: Mapping[UnitStatus, int]) -> str:
    """``2 of 5 units completed, 1 expired, 2 still open``; completed counts every submitted unit
    (reviewed or not)."""
    total = sum(counts.values())
    completed = sum(n for status, n in counts.items() if status in UNIT_SUBMITTED)
    expired = counts.get(UnitStatus.EXPIRED, 0)
    still_open = total - completed - expired
    parts = [f"{completed} of {total} unit{'s' if total != 1 else ''} completed", f"{expired} expired"]
    if still_open:
        parts.append(f"{still_open} still open")
    return ", ".join(parts)
