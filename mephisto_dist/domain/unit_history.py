"""Units per status over time, derived from the timestamps each unit keeps (no history table): when it
was created, launched, last assigned and completed, and since when it holds its current status.

A unit's path is read as: created, then launched, assigned and completed at those times (each that is
set and not after its last change), then its current status since ``status_changed_at``. What the
timestamps do not keep is lost: a unit assigned twice shows its last assignment only, and one handed
back to ``launched`` shows as assigned from its last assignment until it was handed back. Pure: the
rows and "now" are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mephisto_dist.domain.status import UnitStatus


@dataclass(frozen=True)
class UnitTimes:
    status: UnitStatus
    created_at: datetime
    launched_at: datetime | None
    assigned_at: datetime | None
    completed_at: datetime | None
    status_changed_at: datetime


@dataclass(frozen=True)
class StatusHistory:
    times: tuple[datetime, ...]
    """The sampled moments, oldest first (evenly spaced from the first unit's creation to ``now``)."""
    counts: dict[UnitStatus, tuple[int, ...]]
    """For each status, how many units held it at each sampled moment."""

    @property
    def peak(self) -> int:
        return max((sum(c[i] for c in self.counts.values()) for i in range(len(self.times))), default=0)


def unit_path(unit: UnitTimes) -> list[tuple[datetime, UnitStatus]]:
    """The statuses a unit went through, with when it entered each (see the module's docstring)."""
    last = unit.status_changed_at
    path = [(unit.created_at, UnitStatus.CREATED)]
    for at, status in ((unit.launched_at, UnitStatus.LAUNCHED), (unit.assigned_at, UnitStatus.ASSIGNED),
                       (unit.completed_at, UnitStatus.COMPLETED)):
        if at is not None and path[-1][0] <= at <= last:
            path.append((at, status))
    if path[-1][1] != unit.status:
        path.append((max(last, path[-1][0]), unit.status))
    return path


def status_history(units: Iterable[UnitTimes], *, now: datetime, points: int = 60) -> StatusHistory:
    """Units per status at ``points`` moments from the first creation to ``now``: every unit's path
    becomes +1 / -1 changes, swept once in time order."""
    changes: list[tuple[datetime, UnitStatus, int]] = []
    for unit in units:
        previous: UnitStatus | None = None
        for at, status in unit_path(unit):
            if previous is not None:
                changes.append((at, previous, -1))
            changes.append((at, status, 1))
            previous = status
    if not changes:
        return StatusHistory((), {})
    changes.sort(key=lambda change: change[0])
    start = changes[0][0]
    end = max(now, changes[-1][0])
    points = max(points, 2)
    step = (end - start) / (points - 1)
    times = (*(start + step * i for i in range(points - 1)), end)
    running = dict.fromkeys(UnitStatus, 0)
    counts: dict[UnitStatus, list[int]] = {status: [] for status in UnitStatus}
    index = 0
    for moment in times:
        while index < len(changes) and changes[index][0] <= moment:
            _, status, delta = changes[index]
            running[status] += delta
            index += 1
        for status in UnitStatus:
            counts[status].append(running[status])
    return StatusHistory(times, {status: tuple(values) for status, values in counts.items() if any(values)})

