"""Unit launches that failed every attempt: they are not retried on their own, so ``review`` lists them
and ``review resend`` sends them again."""

from __future__ import annotations

from collections.abc import Sequence

from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.queue import LAUNCH_UNITS
from mephisto_dist.runs.launches import FailedLaunch, failed_launches, reset_failed_launches
from mephisto_dist.runtime import Runtime


def failed_unit_launches(runtime: Runtime, run_ids: Sequence[int]) -> list[FailedLaunch]:
    with read_transaction(runtime.sessions) as session:
        return failed_launches(session, run_ids)


def resend_failed_launches(runtime: Runtime, run_ids: Sequence[int] | None) -> int:
    """Make the failed launches (of these runs, or of every run) launchable again and enqueue each
    run's launch after the commit; how many units."""
    with transaction(runtime.sessions) as session:
        launches = reset_failed_launches(session, run_ids)
    for run_id in launches:
        runtime.queue.enqueue(LAUNCH_UNITS, run_id)
    return sum(launches.values())
