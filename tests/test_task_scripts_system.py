"""A run_task.py static HTML task (data from Python, a worker_can_do_unit closure, on_unit_submitted
granting a qualification) run with real processes: ``--detach`` worked by separate Celery workers and web
server, and attached on the embedded default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun, Unit
from mephisto_dist.review.export import unit_records
from mephisto_dist.review.qualifications import granted_values
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import ROOT, celery_worker, child_env, free_port, register, web_server
from tests.taskdirs import write_script_task_dir

pytestmark = pytest.mark.system


def submit(url: str, agent_id: str, rating: str) -> None:
    response = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": {"rating": rating}})
    assert response.status_code == 200, response.text


def work_the_run(url: str) -> None:
    """The closure keeps 'picky' to the last sentence; the shared state's requirement refuses 'banned'
    holders; everyone else gets the lowest unit."""
    picky = register(url, "picky")
    assert picky["init_task_data"]["sentence"] == "python sentence 2", picky
    alice = register(url, "alice")
    assert alice["init_task_data"]["sentence"] == "python sentence 0", alice
    submit(url, alice["agent_id"], "5")
    submit(url, picky["agent_id"], "1")
    bob = register(url, "bob")
    assert bob["init_task_data"]["sentence"] == "python sentence 1", bob
    submit(url, bob["agent_id"], "2")


def run_is_completed(rt: Runtime, run_id: int) -> bool:
    with transaction(rt.sessions) as session:
        run = session.get(TaskRun, run_id)
        return bool(run and run.is_completed)


def test_detached_script_run_with_separate_workers(tmp_path: Path, runtime: Runtime) -> None:
    task_dir = write_script_task_dir(tmp_path, architect="mock")
    launched = subprocess.run(
        [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), "num_tasks=3", "--detach", "--quiet"],
        cwd=ROOT, env=child_env(runtime.settings), capture_output=True, text=True, timeout=60, check=False)
    assert launched.returncode == 0, launched.stderr
    run_id = int(launched.stdout.strip().splitlines()[-1])
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        def launched_units() -> int:
            with transaction(runtime.sessions) as session:
                return int(session.scalar(select(func.count()).select_from(Unit).where(
                    Unit.task_run_id == run_id, Unit.status == "launched")) or 0)

        wait_for(lambda: launched_units() == 3, message="the Celery worker to launch the script's 3 units")
        with transaction(runtime.sessions) as session:
            stored = session.get(TaskRun, run_id)
            assert stored is not None
            assert stored.config["script"]["overrides"] == ["num_tasks=3"]
            assert stored.config["blueprint"]["qualifications"][0]["qualification_name"] == "banned"
        work_the_run(url)
        wait_for(lambda: run_is_completed(runtime, run_id), timeout_s=30,
                 message="on_unit_submitted to run on Celery and close the run")
    with transaction(runtime.sessions) as session:
        records = list(unit_records(session, [run_id]))
        alice = session.scalar(text("select id from worker where worker_name = 'alice'"))
        picky = session.scalar(text("select id from worker where worker_name = 'picky'"))
        assert granted_values(session, int(alice)) == {"gave-five": 1}  # the script's validator, on Celery
        assert granted_values(session, int(picky)) == {}
    assert sorted((r["data"]["inputs"]["sentence"], r["data"]["outputs"]["rating"]) for r in records) == [
        ("python sentence 0", "5"), ("python sentence 1", "2"), ("python sentence 2", "1")]


def test_attached_script_run_on_the_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    task_dir = write_script_task_dir(tmp_path, port=port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"})
    log = tmp_path / "cli.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), "num_tasks=3"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or "Open the task as a worker" in log.read_text(),
                 timeout_s=60, message="the attached run to start")
        assert process.poll() is None, log.read_text()
        work_the_run(url)
        assert process.wait(60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait(10)
    assert "task run 1 finished: 3 completed" in log.read_text()
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'mephisto-dist.db'}")
    with engine.connect() as connection:
        granted = connection.execute(text(
            "select w.worker_name, q.name from granted_qualification g join worker w on w.id = g.worker_id "
            "join qualification q on q.id = g.qualification_id")).all()
    engine.dispose()
    assert [tuple(row) for row in granted] == [("alice", "gave-five")]
