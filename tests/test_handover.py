"""A submit hands the slot its unit held straight to the run's next unit (``launches.hand_over``): a real
web process on SQLite and on PostgreSQL, real Redis, no Celery worker and no beat, so the only launcher
after the first launch is the submitting request itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.limiter.units import token_holder
from mephisto_dist.providers import make_provider
from mephisto_dist.runs.launches import LaunchContext, launch_units, run_pool
from mephisto_dist.runs.preparation import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from tests.system import register, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

ACTIVE = (UnitStatus.LAUNCHED.value, UnitStatus.ASSIGNED.value)


def launched_run(rt: Runtime, tmp_path: Path, *, rows: int, cap: int) -> int:
    """A run with its first ``cap`` units launched from this process (as a Celery launch task would)."""
    task_dir = write_task_dir(tmp_path, rows=rows, architect="mock", cap=cap)
    run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
    assert launch_units(rt.sessions, LaunchContext.of(rt, make_provider("mock")), run_id,
                        now=datetime.now(UTC)) == cap
    return run_id


def units(rt: Runtime, run_id: int) -> dict[int, tuple[str, str | None]]:
    """Every unit of the run: id -> (status, launch id)."""
    with read_transaction(rt.sessions) as session:
        return {unit_id: (status, launch_id) for unit_id, status, launch_id in session.execute(
            select(Unit.id, Unit.status, Unit.launch_id).where(Unit.task_run_id == run_id))}


def holders_of_active(rt: Runtime, run_id: int) -> set[str]:
    return {token_holder(unit_id, launch_id) for unit_id, (status, launch_id) in units(rt, run_id).items()
            if status in ACTIVE}


def submit(url: str, agent_id: str) -> None:
    response = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": {"rating": "4"}})
    assert response.status_code == 200, response.text


def test_the_freed_slot_is_the_next_units_when_the_submit_answers(tmp_path: Path, runtime: Runtime) -> None:
    run_id = launched_run(runtime, tmp_path, rows=5, cap=2)
    with web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        for n in range(5):
            agent = register(url, f"w{n}", f"a{n}")
            assert agent["agent_id"], agent
            before = units(runtime, run_id)
            submit(url, agent["agent_id"])
            # No waiting: the answer comes after the handover.
            after = units(runtime, run_id)
            done = int(agent_unit(runtime, agent["agent_id"]))
            assert after[done][0] == UnitStatus.COMPLETED.value
            expected_active = min(2, 5 - n - 1)
            assert sum(status in ACTIVE for status, _ in after.values()) == expected_active
            # Exactly the active units' launches hold the run's tokens: the finished unit's went to the
            # newly launched unit, not back to the pool.
            assert runtime.limiter.holders(run_pool(run_id)) == holders_of_active(runtime, run_id)
            newly = [u for u, (status, _) in after.items() if status in ACTIVE and before[u][0] == "created"]
            assert len(newly) == (1 if n < 3 else 0)
            # No intent is left behind: every unit is launched, done, or created with no launch.
            assert all(launch is None for status, launch in after.values() if status == UnitStatus.CREATED.value)


def agent_unit(rt: Runtime, agent_id: str) -> int:
    with read_transaction(rt.sessions) as session:
        unit_id = session.scalar(select(Unit.id).where(Unit.agent_id == agent_id))
    assert unit_id is not None
    return int(unit_id)


def test_a_cap_lowered_below_usage_takes_the_slot_back_and_leaves_no_intent(
        tmp_path: Path, runtime: Runtime) -> None:
    run_id = launched_run(runtime, tmp_path, rows=4, cap=2)
    with web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        first, second = register(url, "w1", "a1"), register(url, "w2", "a2")
        runtime.limiter.set_cap(run_pool(run_id), 1)  # what `limits --max-concurrent 1` stores
        submit(url, first["agent_id"])
        after = units(runtime, run_id)
        assert sum(status in ACTIVE for status, _ in after.values()) == 1
        assert runtime.limiter.holders(run_pool(run_id)) == holders_of_active(runtime, run_id)
        assert all(launch is None for status, launch in after.values() if status == UnitStatus.CREATED.value)
        # Usage is under the cap again: the next submit hands its slot over as usual.
        submit(url, second["agent_id"])
        assert sum(status in ACTIVE for status, _ in units(runtime, run_id).values()) == 1
        assert runtime.limiter.holders(run_pool(run_id)) == holders_of_active(runtime, run_id)


def test_a_pool_lost_before_the_submit_is_rebuilt_and_the_slot_refilled(
        tmp_path: Path, runtime: Runtime, redis_url: str) -> None:
    run_id = launched_run(runtime, tmp_path, rows=4, cap=2)
    with web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        agent = register(url, "w1", "a1")
        client = redis.Redis.from_url(redis_url)
        client.flushall()  # Redis restarted: every pool and its ready marker gone
        client.close()
        submit(url, agent["agent_id"])
        after = units(runtime, run_id)
        assert sum(status in ACTIVE for status, _ in after.values()) == 2
        assert runtime.limiter.holders(run_pool(run_id)) == holders_of_active(runtime, run_id)
        assert all(launch is None for status, launch in after.values() if status == UnitStatus.CREATED.value)
