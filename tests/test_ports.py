"""One port, one open run: a second run on a port an open run serves is refused before anything is
created, and the first run's workers keep submitting; the port probe answers what the server's own
bind would (a port left in TIME_WAIT is free, a listener is not)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from mephisto_dist.architects import ServerPlan, check_port_free
from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import ConfigError
from tests.conftest import wait_for
from tests.system import ROOT, celery_worker, child_env, free_port, make_runtime, stop
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system


def test_a_second_run_on_a_served_port_is_refused_and_the_first_runs_workers_submit(
        tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    env = child_env(rt.settings)
    port = free_port()
    first_dir = write_task_dir(tmp_path / "first", rows=2, port=port, task_name="first-task")
    second_dir = write_task_dir(tmp_path / "second", rows=2, port=port, task_name="second-task")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=False)

    created = cli("run", str(first_dir), "--detach", "--quiet")
    assert created.returncode == 0, created.stderr
    run_id = int(created.stdout.strip())
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", "web", "--port", str(port)], cwd=ROOT,
                           env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with celery_worker(rt.settings, tmp_path / "worker.log"):
            def answers() -> bool:
                try:
                    return httpx.get(url + "/task_config.json", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(answers, timeout_s=30, message="the web server")

            def claim() -> dict[str, object] | None:
                data = httpx.post(url + "/request_agent", json={"provider_data": {
                    "worker_name": "w1", "agent_registration_id": "a-w1", "assignment_id": "a"}}).json()["data"]
                return data if data["agent_id"] else None

            agent = wait_for(claim, timeout_s=30, message="a unit of the first run")
            for args in (("run", str(second_dir), "--detach"), ("run", str(second_dir))):
                refused = cli(*args)
                assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
                lines = refused.stderr.strip().splitlines()
                assert len(lines) == 1 and f"open task run {run_id} (first-task)" in lines[0], refused.stderr
                assert "mephisto.architect.port=N" in lines[0]
            with read_transaction(rt.sessions) as session:
                assert session.scalar(select(func.count()).select_from(TaskRun)) == 1
            done = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent["agent_id"],
                                                         "final_data": {"rating": "5"}})
            assert done.status_code == 200, done.text
    finally:
        stop(web)
        log.close()
        rt.close()


def test_the_port_probe_binds_as_the_server_does() -> None:
    port = free_port()
    plan = ServerPlan(True, "127.0.0.1", port, f"http://localhost:{port}")
    listener = socket.create_server(("127.0.0.1", port))  # reuse_address, as uvicorn's
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    with pytest.raises(ConfigError, match=f"port {port} is already taken"):
        check_port_free(plan)
    accepted.close()  # the server side closes first: its end of the connection lingers in TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    check_port_free(plan)  # what a rerun right after a finished run does
    with socket.create_server(("127.0.0.1", port)), \
            pytest.raises(ConfigError, match="stop the program listening there") as refused:
        check_port_free(plan, can_override=False)
    assert "mephisto.architect.port" not in str(refused.value)  # resume takes no such override
