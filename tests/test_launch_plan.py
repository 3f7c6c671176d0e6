"""A launch plan asks for no more launches than the run has units left to launch: an uncapped run whose
units are all out (every submit there used to plan a batch of 1,000 launch ids, only to find no unit to
bind them to) plans nothing, and a capped run with fewer units than free slots plans only those."""

from __future__ import annotations

from pathlib import Path

import pytest

from mephisto_dist.providers import make_provider
from mephisto_dist.runs.launches import LaunchContext, _plan, launch_units
from mephisto_dist.runs.preparation import create_run, prepare_run
from mephisto_dist.work.served import now
from tests.system import make_runtime
from tests.taskdirs import write_task_dir


@pytest.mark.parametrize(("rows", "cap", "first_batch", "launched"), [(3, 0, 3, 3), (3, 5, 3, 3), (3, 2, 2, 2)])
def test_a_plan_never_outnumbers_the_units_left_to_launch(
        tmp_path: Path, database_url: str, redis_url: str, rows: int, cap: int, first_batch: int,
        launched: int) -> None:
    rt = make_runtime(tmp_path / "data", database_url, redis_url)
    run_id = create_run(rt, prepare_run(write_task_dir(tmp_path, rows=rows, architect="mock", cap=cap), "example",
                                        [], check_port=False))
    ctx = LaunchContext.of(rt, make_provider("mock"))
    plan = _plan(rt.sessions, ctx, run_id)
    assert plan is not None and plan.batch == first_batch
    assert launch_units(rt.sessions, ctx, run_id, now=now()) == launched
    # Every unit out (uncapped, or fewer units than the cap), or the cap full: nothing to plan.
    assert _plan(rt.sessions, ctx, run_id) is None
