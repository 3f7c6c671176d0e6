"""``status`` words a run by its state and counts completed and expired units apart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.db.transitions import move_units
from mephisto_dist.domain.run_summary import run_state, unit_progress
from mephisto_dist.domain.status import UnitStatus as U
from mephisto_dist.runs.task_runs import mark_completed_if_done
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.factories import make_run, now
from tests.system import make_runtime

pytestmark = pytest.mark.system


def test_progress_counts_completed_and_expired_apart() -> None:
    assert unit_progress({U.COMPLETED: 2, U.ACCEPTED: 1, U.EXPIRED: 1}) == "3 of 4 units completed, 1 expired"
    assert unit_progress({U.LAUNCHED: 1, U.ASSIGNED: 1, U.REJECTED: 1}) == (
        "1 of 3 units completed, 0 expired, 2 still open")
    assert unit_progress({U.EXPIRED: 1}) == "0 of 1 unit completed, 1 expired"
    assert run_state(finished=True, stopping_reason="forced") == "finished"
    assert run_state(finished=False, stopping_reason="forced") == "stopping (forced)"
    assert run_state(finished=False, stopping_reason=None) == "running"


def test_status_of_a_finished_run(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    database_url = f"sqlite:///{data / 'mephisto-dist.db'}"
    runtime = make_runtime(data, database_url, redis_url)
    run = make_run(runtime.sessions, assignments=3)
    for worker in ("w1", "w2"):
        reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": worker}})
        with transaction(runtime.sessions) as session:
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            claims.submit_task(session, run, details.agent_id, {"a": 1}, now=now())
    with transaction(runtime.sessions) as session:
        left = list(session.scalars(select(Unit.id).where(Unit.status == U.LAUNCHED.value)))
        move_units(session, left, U.LAUNCHED, U.EXPIRED, now=now())
        assert mark_completed_if_done(session, run.run_id, now=now())
    runtime.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(data), "MEPHISTO_DIST_DATABASE_URL": database_url,
                "MEPHISTO_DIST_REDIS_URL": redis_url})
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "status", str(run.run_id)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"task run {run.run_id} (mock, static_task): finished: 2 of 3 units completed, 1 expired" in out, out
    assert "concurrency pool: released (the run is finished)" in out
    assert "(stopped with the run)" in out
    assert "? held" not in out and "does NOT answer" not in out and "3/3" not in out
