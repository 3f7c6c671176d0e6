"""A unit's tokens: who holds them, and giving back those a unit's transition freed.

A unit holds up to four tokens (DESIGN.md "Limits"; pool names in :mod:`~mephisto_dist.limiter.keys`):

- in its run's pool and the deployment's (``max_num_concurrent_units``, ``MEPHISTO_DIST_MAX_CONCURRENT_UNITS``),
  held by its launch (:func:`token_holder`), while the unit is launched or assigned;
- in its worker's assigned pool of the run (``allowed_concurrent``), held by the unit (:func:`unit_holder`),
  while it is assigned;
- in its worker's pool of the task (``maximum_units_per_worker``), held by the unit, while it is assigned
  or submitted.

Every path that moves a unit out of one of those statuses gives its tokens back with
:func:`release_unit_tokens`, after the commit that moved it (a token given back before the commit would
be a free slot while the database still counts the unit). Which pools a status frees is the domain's
decision (:func:`~mephisto_dist.domain.status.tokens_freed`). Releasing a pool the run does not limit,
or a token already given back, is harmless, so the caller need not know the run's limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mephisto_dist.domain.status import UnitStatus, tokens_freed
from mephisto_dist.limiter import Limiter, keys


def unit_holder(unit_id: int) -> str:
    """A unit as the holder of a per-worker token (``allowed_concurrent``, ``maximum_units_per_worker``)."""
    return f"unit:{unit_id}"


def token_holder(unit_id: int, launch_id: str | None) -> str:
    """Who holds a unit's run-wide tokens: its launch (a unit launched before launches had ids is named by
    itself)."""
    return f"launch:{launch_id}" if launch_id else f"unit:{unit_id}"


@dataclass(frozen=True, slots=True)
class UnitTokens:
    """A unit that moved to ``status``, with what names its tokens: the run and the launch that holds its
    run-wide tokens, and the worker it was assigned to (``None``: none) with the run's ``task_name``."""

    run_id: int
    unit_id: int
    launch_id: str | None
    status: UnitStatus
    worker_id: int | None = None
    task_name: str | None = None

    def __post_init__(self) -> None:
        if self.worker_id is not None and self.task_name is None:
            raise ValueError(f"unit {self.unit_id}: a worker's tokens need the task name")

    def run_tokens(self) -> list[tuple[str, str]]:
        """The (holder, pool) tokens of the run and the deployment this unit's new status frees."""
        if not tokens_freed(self.status).run_slot:
            return []
        holder = token_holder(self.unit_id, self.launch_id)
        return [(holder, keys.run_units_pool(self.run_id)), (holder, keys.deployment_units_pool())]

    def worker_tokens(self) -> list[tuple[str, str]]:
        """The (holder, pool) tokens of its worker this unit's new status frees."""
        if self.worker_id is None or self.task_name is None:
            return []
        freed = tokens_freed(self.status)
        tokens: list[tuple[str, str]] = []
        if freed.worker_slot:
            tokens.append((unit_holder(self.unit_id), keys.worker_assigned_pool(self.run_id, self.worker_id)))
        if freed.worker_unit:
            tokens.append((unit_holder(self.unit_id), keys.worker_task_units_pool(self.task_name, self.worker_id)))
        return tokens


def release_unit_tokens(limiter: Limiter, units: Iterable[UnitTokens], *, run_wide: bool = True) -> int:
    """Give back, in one step, every token the units' new statuses free; call it after the commit that
    moved them. Idempotent. Returns how many run-wide tokens (run and deployment pools) were still held:
    0 means the slots were given back already (or the run is not limited). ``run_wide=False``: the
    run-wide tokens went elsewhere already (a hand-over moved them to the next unit): only the worker's."""
    units = list(units)
    run_wide_tokens = [token for unit in units for token in unit.run_tokens()] if run_wide else []
    tokens = run_wide_tokens + [token for unit in units for token in unit.worker_tokens()]
    if not tokens:
        return 0
    return sum(limiter.release_each(tokens)[:len(run_wide_tokens)])
