"""Changing a live run's cap from the CLI, and the deployment-wide cap across runs, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import ROOT, celery_worker, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

ACTIVE = ("launched", "assigned")


def sqlite_runtime(tmp_path: Path, redis_url: str, **settings: str) -> Runtime:
    return make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'db.sqlite'}", redis_url, **settings)


@pytest.fixture
def runtime(tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    rt = sqlite_runtime(tmp_path, redis_url)
    yield rt
    rt.close()


def active(rt: Runtime, run_id: int | None = None) -> int:
    with transaction(rt.sessions) as session:
        query = select(func.count()).select_from(Unit).where(Unit.status.in_(ACTIVE))
        if run_id is not None:
            query = query.where(Unit.task_run_id == run_id)
        return int(session.scalar(query) or 0)


def cli(rt: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update(rt.settings.to_env())
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def take_and_submit(url: str, worker: str) -> None:
    data = httpx.post(url + "/request_agent", json={"provider_data": {
        "worker_name": worker, "assignment_id": "a", "provider_type": "mock"}}).json()["data"]
    assert data["agent_id"], data
    assert httpx.post(url + "/submit_task", json={"USED_AGENT_ID": data["agent_id"],
                                                  "final_data": {}}).status_code == 200


def test_the_cap_of_a_live_run_is_shown_raised_and_lowered(tmp_path: Path, runtime: Runtime) -> None:
    task_dir = write_task_dir(tmp_path, rows=8, architect="mock", cap=2)
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(runtime, run_id)
        wait_for(lambda: active(runtime, run_id) == 2, message="2 units launched")
        shown = cli(runtime, "limits", str(run_id))
        assert shown.returncode == 0, shown.stderr
        assert "max_num_concurrent_units" in shown.stdout and "│    2 │    0 │   2 │" in shown.stdout, shown.stdout

        raised = cli(runtime, "limits", str(run_id), "--max-concurrent", "4")
        assert raised.returncode == 0, raised.stderr
        wait_for(lambda: active(runtime, run_id) == 4, message="raising the cap to launch 2 more")

        lowered = cli(runtime, "limits", str(run_id), "--max-concurrent", "1")
        assert "4 units are out, none launches until fewer than 1 are" in lowered.stdout, lowered.stdout
        for n in range(3):
            take_and_submit(url, f"w{n}")
        assert active(runtime, run_id) == 1  # 4 out, 3 done: nothing new launched
        take_and_submit(url, "w3")
        wait_for(lambda: active(runtime, run_id) == 1, message="one unit at a time under the lowered cap")

    bad = cli(runtime, "limits", "999")
    assert bad.returncode == 4 and "task run 999 does not exist" in bad.stderr  # not found


def test_the_deployment_wide_cap_holds_across_runs(tmp_path: Path, redis_url: str) -> None:
    rt = sqlite_runtime(tmp_path, redis_url, MAX_CONCURRENT_UNITS="3")
    try:
        task_dir = write_task_dir(tmp_path, rows=4, architect="mock")
        first = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
        second = create_run(rt, prepare_run(task_dir, "example", ["mephisto.task.task_name=other"],
                                            check_port=False))
        with celery_worker(rt.settings, tmp_path / "worker.log"), \
                web_server(rt.settings, first, tmp_path / "web1.log") as url1, \
                web_server(rt.settings, second, tmp_path / "web2.log") as url2:
            enqueue_launch(rt, first)
            enqueue_launch(rt, second)
            wait_for(lambda: active(rt) == 3, message="3 units launched across both runs")
            for n in range(5):
                url = url1 if active(rt, first) else url2
                take_and_submit(url, f"w{n}")
                assert active(rt) <= 3
                expected = min(3, 8 - n - 1)
                wait_for(lambda expected=expected: active(rt) == expected, message="the freed slot refilled")
            wait_for(lambda: active(rt) == 3, message="freed slots refilled up to the deployment cap")
    finally:
        rt.close()
