"""``maximum_units_per_worker`` counts a worker's units as Mephisto does (assigned or submitted): a unit
that timed out counts no more, so its worker is not locked out of the task."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Agent, Unit
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from tests.conftest import wait_for
from tests.system import celery_beat, celery_worker, make_runtime, web_server
from tests.taskdirs import write_task_dir


@pytest.mark.system
def test_a_worker_whose_unit_timed_out_gets_another(tmp_path: Path, database_url: str, redis_url: str) -> None:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, RUN_SWEEP_EVERY_S="0.5", POOL_RENEW_EVERY_S="0.5")
    task_dir = write_task_dir(tmp_path, rows=3, architect="mock", extra_yaml=(
        "    maximum_units_per_worker: 1\n    assignment_duration_in_seconds: 1\n"))
    run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))

    def request(worker: str, ref: str) -> dict[str, object]:
        data = httpx.post(url + "/request_agent", json={"provider_data": {
            "worker_name": worker, "agent_registration_id": f"{ref}-{worker}", "assignment_id": ref}}).json()["data"]
        assert isinstance(data, dict)
        return data

    def agent_status(agent_id: object) -> str | None:
        with read_transaction(rt.sessions) as session:
            return session.scalar(select(Agent.status).where(Agent.id == agent_id))

    with celery_worker(rt.settings, tmp_path / "worker.log"), celery_beat(rt.settings, tmp_path / "beat.log"), \
            web_server(rt.settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(rt, run_id)
        wait_for(lambda: _launched(rt, run_id) == 3, timeout_s=30, message="3 units launched")
        first = request("slow", "a")
        assert first["agent_id"], first
        # While the unit is theirs, it counts: no second one.
        refused = request("slow", "b")
        assert refused["agent_id"] is None and "maximum number of units" in str(refused["failure_reason"])
        wait_for(lambda: agent_status(first["agent_id"]) == "timeout", timeout_s=30, message="the unit to time out")
        # The sweep records the time-out, then gives the worker's token back just after its commit: a request
        # in between is still refused (and leaves nothing behind), so ask again until the token is back.
        answers: list[dict[str, object]] = []

        def granted() -> bool:
            answers.append(request("slow", f"c{len(answers)}"))
            return bool(answers[-1]["agent_id"])

        wait_for(granted, timeout_s=10, message="a fresh unit for the worker whose unit timed out")
        again = answers[-1]
        assert all("maximum number of units" in str(a["failure_reason"]) for a in answers[:-1]), answers
        done = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": again["agent_id"], "final_data": {}})
        assert done.status_code == 200
        # Submitted, it counts for good.
        after = request("slow", "d")
        assert after["agent_id"] is None and "maximum number of units" in str(after["failure_reason"])
    rt.close()


def _launched(rt: object, run_id: int) -> int:
    with read_transaction(rt.sessions) as session:  # type: ignore[attr-defined]
        return len(list(session.scalars(select(Unit.id).where(Unit.task_run_id == run_id,
                                                              Unit.status == "launched"))))
