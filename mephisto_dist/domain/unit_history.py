"""Units per status over time, derived from the timestamps each unit keeps (no history table): when it
was created, launched, last assigned and completed, and since when it holds its current status.

A unit's path is read as: created, then launched, assigned and completed at those times (each that is
set and not after its last change), then its current status since ``status_changed_at``. What the
timestamps do not keep is lost: a unit assigned twice shows its last assignment only, and one handed
back to ``launched`` shows as assigned from its last assignment until it was handed back. Pure: the
rows and "now" are passed in.
"""

from __future__ import annotations

from bisect import bisect_right
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


@dataclass(frozen=True)
class StatusSteps:
    """How many units held each status, from each moment a count changed until the next: what
    :func:`status_steps` derives once, and :meth:`sample` reads at any "now" cheaply."""

    at: tuple[datetime, ...]
    counts: tuple[tuple[int, ...], ...]
    """For each moment of ``at``, the count of each status of :data:`STATUSES`, in that order."""

    def sample(self, *, now: datetime, points: int = 60) -> StatusHistory:
        """The counts at ``points`` moments, evenly spaced from the first change to ``now`` (or to the
        last change, if that is later)."""
        if not self.at:
            return StatusHistory((), {})
        start, end = self.at[0], max(now, self.at[-1])
        points = max(points, 2)
        step = (end - start) / (points - 1)
        times = (*(start + step * i for i in range(points - 1)), end)
        rows = [self.counts[bisect_right(self.at, moment) - 1] for moment in times]
        return StatusHistory(times, {status: column for status, column in zip(
            STATUSES, (tuple(row[i] for row in rows) for i in range(len(STATUSES))), strict=True) if any(column)})


STATUSES = tuple(UnitStatus)


def status_steps(units: Iterable[UnitTimes]) -> StatusSteps:
    """Every unit's path as +1 / -1 changes, swept once in time order."""
    index = {status: i for i, status in enumerate(STATUSES)}
    changes: list[tuple[datetime, int, int]] = []
    for unit in units:
        previous: int | None = None
        for entered, status in unit_path(unit):
            if previous is not None:
                changes.append((entered, previous, -1))
            previous = index[status]
            changes.append((entered, previous, 1))
    changes.sort(key=lambda change: change[0])
    running = [0] * len(STATUSES)
    at: list[datetime] = []
    counts: list[tuple[int, ...]] = []
    for moment, column, delta in changes:
        running[column] += delta
        if at and at[-1] == moment:
            counts[-1] = tuple(running)
        else:
            at.append(moment)
            counts.append(tuple(running))
    return StatusSteps(tuple(at), tuple(counts))


def status_history(units: Iterable[UnitTimes], *, now: datetime, points: int = 60) -> StatusHistory:
    """Units per status at ``points`` moments from the first creation to ``now``."""
    return status_steps(units).sample(now=now, points=points)
