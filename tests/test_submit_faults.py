"""A submission whose answer is committed is a success for the worker, whatever happens after: with
Redis gone at that moment, the worker hears "Submitted!" (and no internal detail), and once Redis is
back beat gives the slot back and the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import KillableRedis, celery_beat, celery_worker, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system


def statuses(rt: Runtime, run_id: int) -> list[str]:
    with read_transaction(rt.sessions) as session:
        return sorted(session.scalars(select(Unit.status).where(Unit.task_run_id == run_id)))


def test_a_submit_whose_release_fails_is_a_success_and_the_slot_comes_back(tmp_path: Path, sqlite_url: str) -> None:
    server = KillableRedis(tmp_path / "redis")
    server.start()
    # A Redis down for good is waited out for a second only (OUTAGE_WAIT_S), then told.
    rt = make_runtime(tmp_path / "data", sqlite_url, server.url, POOL_RENEW_EVERY_S="0.5", RUN_SWEEP_EVERY_S="0.5",
                      OUTAGE_WAIT_S="1")
    try:
        # allowed_concurrent: a worker's request needs Redis, to show how its failure is told.
        task_dir = write_task_dir(tmp_path, rows=3, architect="mock", cap=2,
                                  extra_yaml="    allowed_concurrent: 1\n")
        run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
        with celery_worker(rt.settings, tmp_path / "worker.log"), celery_beat(rt.settings, tmp_path / "beat.log"), \
                web_server(rt.settings, run_id, tmp_path / "web.log") as url:
            enqueue_launch(rt, run_id)
            wait_for(lambda: statuses(rt, run_id).count("launched") == 2, timeout_s=30, message="the first units")
            agent = httpx.post(url + "/request_agent", json={"provider_data": {
                "worker_name": "w1", "agent_registration_id": "a-w1", "assignment_id": "a"}}).json()["data"]
            assert agent["agent_id"], agent
            server.kill()
            done = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent["agent_id"],
                                                         "final_data": {"rating": "5"}}, timeout=30)
            assert done.status_code == 200 and done.json()["status"] == "Submitted!", done.text
            assert statuses(rt, run_id) == ["completed", "created", "launched"]
            # The launch bound to the freed slot in the submitting transaction was cleared, so beat's next
            # sweep refills the slot, rather than re-sending that launch once its lease (60 s) has passed.
            with read_transaction(rt.sessions) as session:
                assert session.scalars(select(Unit.launch_id).where(
                    Unit.task_run_id == run_id, Unit.status == "created")).all() == [None]
            # A request that does need Redis now is refused in plain words, without internals.
            refused = httpx.post(url + "/request_agent", json={"provider_data": {
                "worker_name": "w2", "agent_registration_id": "b-w2", "assignment_id": "b"}}, timeout=30)
            body = json.dumps(refused.json())
            assert refused.status_code == 503, body
            assert str(server.socket) not in body and "redis" not in body.lower(), body
            server.start()  # empty: the pool, the queue and beat's lock are gone with the old one
            wait_for(lambda: statuses(rt, run_id) == ["completed", "launched", "launched"], timeout_s=60,
                     message="beat to give the slot back and refill it")
    finally:
        rt.close()
        server.stop()
