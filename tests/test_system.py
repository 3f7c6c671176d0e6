"""The run end to end with real processes: a Celery worker launches units and closes the run, the web
server speaks Mephisto's router protocol, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, TaskRun, Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.review.export import unit_records
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import celery_worker, make_runtime, register, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, MAX_UPLOAD_BYTES=str(64 * 1024))
    yield rt
    rt.close()




def counts(rt: Runtime, run_id: int) -> dict[str, int]:
    with transaction(rt.sessions) as session:
        rows = session.execute(select(Unit.status, func.count()).where(Unit.task_run_id == run_id)
                               .group_by(Unit.status))
        return {status: n for status, n in rows}


def test_a_run_goes_from_launch_to_export(tmp_path: Path, runtime: Runtime) -> None:
    task_dir = write_task_dir(tmp_path, rows=3, architect="mock")
    prepared = prepare_run(task_dir, "example", ["mephisto.blueprint.units_per_assignment=2"], check_port=False)
    run_id = create_run(runtime, prepared)
    assert counts(runtime, run_id) == {"created": 6}
    log = tmp_path / "worker.log"
    with celery_worker(runtime.settings, log), web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(runtime, run_id)
        wait_for(lambda: counts(runtime, run_id) == {"launched": 6}, message="the worker to launch 6 units")
        config = httpx.get(url + "/task_config.json").json()
        assert config["task_source"] == "task.html"
        html = httpx.get(url + "/task.html")
        assert "${sentence}" in html.text

        first = register(url, "alice")
        assert first["agent_id"] and first["init_task_data"]["sentence"] == "sentence number 0"
        again = register(url, "alice")
        assert again["agent_id"] == first["agent_id"]
        upload = b"evidence bytes\n"
        response = httpx.post(url + "/submit_task", data={
            "USED_AGENT_ID": first["agent_id"], "final_string_data": json.dumps({"rating": "5"})},
            files={"evidence": ("notes.txt", upload, "text/plain")})
        assert response.status_code == 200, response.text
        repeat = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": first["agent_id"],
                                                        "final_data": {"rating": "1"}})
        assert repeat.status_code == 200 and repeat.json()["status"] == "Already submitted"

        for n in range(5):
            worker = f"w{n}"
            agent = register(url, worker, f"hit{n}")
            assert agent["agent_id"], agent
            ok = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent["agent_id"],
                                                        "final_data": {"rating": str(n % 5 + 1)}})
            assert ok.status_code == 200
        refused = register(url, "latecomer")
        assert refused["agent_id"] is None and "no unit available" in refused["failure_reason"]

        def completed() -> bool:
            with transaction(runtime.sessions) as session:
                run = session.get(TaskRun, run_id)
                return bool(run and run.is_completed)

        wait_for(completed, message="the worker to mark the run completed")
    with transaction(runtime.sessions) as session:
        records = list(unit_records(session, [run_id]))
    assert len(records) == 6
    alice = next(r for r in records if r["worker_name"] == "alice")
    outputs = alice["data"]["outputs"]
    assert outputs["rating"] == "5"
    assert outputs["evidence"]["filename"] == "notes.txt"
    assert Path(outputs["evidence"]["path"]).read_bytes() == upload
    assert alice["data"]["inputs"]["sentence"] == "sentence number 0"
    assert {r["status"] for r in records} == {UnitStatus.COMPLETED.value}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_protocol_refuses_bad_requests_with_a_clear_status(tmp_path: Path, runtime: Runtime) -> None:
    task_dir = write_task_dir(tmp_path, rows=1, architect="mock")
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    other = create_run(runtime, prepare_run(task_dir, "example", ["mephisto.task.task_name=other"],
                                            check_port=False))
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url, \
            web_server(runtime.settings, other, tmp_path / "web2.log") as other_url:
        enqueue_launch(runtime, run_id)
        enqueue_launch(runtime, other)
        wait_for(lambda: counts(runtime, run_id) == {"launched": 1} and counts(runtime, other) == {"launched": 1},
                 message="both runs launched")
        agent = register(url, "alice")["agent_id"]
        foreign = register(other_url, "bob")["agent_id"]

        forged = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": "forged", "final_data": {}})
        assert forged.status_code == 404 and "unknown agent id" in forged.json()["error"]
        cross = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": foreign, "final_data": {}})
        assert cross.status_code == 403 and "does not belong" in cross.json()["error"]
        malformed = httpx.post(url + "/request_agent", content=b"{not json",
                               headers={"content-type": "application/json"})
        assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]
        missing = httpx.post(url + "/request_agent", json={"provider_data": {"assignment_id": "x"}})
        assert missing.status_code == 400 and "worker_name" in missing.json()["error"]
        huge = httpx.post(url + "/submit_task", data={"USED_AGENT_ID": agent, "final_string_data": "{}"},
                          files={"evidence": ("big.bin", b"x" * (128 * 1024), "application/octet-stream")})
        assert huge.status_code == 413 and "over the limit" in huge.json()["error"]
        traversal = httpx.get(url + "/..%2f..%2fetc/passwd")
        assert traversal.status_code == 404
        assert not list((runtime.settings.data_dir / "storage").glob("**/big.bin"))
        # Nothing above changed the agent: it can still submit.
        ok = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent, "final_data": {"rating": "1"}})
        assert ok.status_code == 200
    with transaction(runtime.sessions) as session:
        stored = session.get(Agent, agent)
        assert stored is not None and stored.outputs == {"rating": "1"}
