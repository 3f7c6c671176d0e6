"""An attached run outlives its children: SIGKILL of its worker, beat and web in turn, each restarted
(the display says so) while units in flight are kept; and the commands that clean up after a run whose
processes are all gone finish their job, say what they did and exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from mephisto_dist.cli.embedded import WEB_PROCESS_NAME
from tests.conftest import wait_for
from tests.system import ROOT
from tests.test_lifecycle_system import AttachedRun

pytestmark = pytest.mark.system


def children(cli_pid: int) -> dict[str, int]:
    """The attached run's children by role: worker, beat, web (forked by the CLI and named, or spawned
    again after a restart)."""
    listed = subprocess.run(["ps", "-ww", "-o", "pid=,comm=,args=", "--ppid", str(cli_pid)], capture_output=True,
                            text=True, check=False).stdout
    found: dict[str, int] = {}
    for line in listed.splitlines():
        pid, comm, args = line.split(maxsplit=2)
        if comm == WEB_PROCESS_NAME:
            found["web"] = int(pid)
        elif " worker" in args and "celery" in args:
            found["worker"] = int(pid)
        elif " beat" in args and "celery" in args:
            found["beat"] = int(pid)
        elif "mephisto_dist.web" in args:
            found["web"] = int(pid)
    return found


def run_row(run: AttachedRun) -> tuple[int, int]:
    engine = create_engine(f"sqlite:///{run.data_dir / 'mephisto-dist.db'}")
    try:
        with engine.connect() as connection:
            row = connection.execute(text("select id, is_completed from task_run")).one()
            return int(row[0]), int(row[1])
    finally:
        engine.dispose()


def test_sigkill_of_each_child_in_turn_is_survived_and_the_run_finishes(tmp_path: Path) -> None:
    run = AttachedRun(tmp_path, rows=4)
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: len(children(run.process.pid)) == 3, timeout_s=30, message="worker, beat and web")
        done: list[str] = []
        for n, role in enumerate(("worker", "beat", "web")):
            agent = run.register(f"w{n}")
            assert agent["agent_id"], agent
            old_pid = children(run.process.pid)[role]
            os.killpg(old_pid, signal.SIGKILL)
            run.wait_for_output(rf"the {role} process exited \(code -9\); restarting it in 1 s")
            run.wait_for_output(rf"the {role} process restarted")
            wait_for(lambda r=role, o=old_pid: children(run.process.pid).get(r, o) != o, timeout_s=30,
                     message=f"a new {role} process")
            # The unit taken before the kill is still the worker's: their submission is accepted.
            submitted = wait_for(lambda a=agent: _submits(run, a["agent_id"]), timeout_s=30,
                                 message="the submission to be accepted")
            assert submitted.json()["status"] == "Submitted!"
            done.append(str(agent["agent_id"]))
        last = run.register("w9")
        assert last["agent_id"]
        assert run.submit(last["agent_id"]).status_code == 200
        assert run.wait(60) == 0, run.text()
    finally:
        run.kill()
    assert run.statuses() == {"completed": 4}
    assert run.agent_statuses() == {"completed": 4}  # nothing done twice
    assert run_row(run)[1] == 1


def _submits(run: AttachedRun, agent_id: object) -> object:
    try:
        response = run.submit(agent_id)
    except Exception:  # noqa: BLE001 (the web server is still starting)
        return None
    return response if response.status_code == 200 else None


def cli(run: AttachedRun, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT, env=run.env,
                          capture_output=True, text=True, check=False)


def test_shutdown_and_limits_of_a_run_whose_processes_are_gone(tmp_path: Path) -> None:
    run = AttachedRun(tmp_path, rows=3)
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: run.statuses().get("launched") == 3, message="units launched")
    finally:
        run.kill()  # the CLI and its children, the embedded Redis with them
    run_id, _ = run_row(run)
    stopped = cli(run, "shutdown", str(run_id))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"task run {run_id} stopped: 3 available unit(s) expired" in stopped.stdout
    assert stopped.stderr == ""
    assert run.statuses() == {"expired": 3}
    assert run_row(run)[1] == 1  # its final state, not "stopping"
    limits = cli(run, "limits", str(run_id))
    assert limits.returncode == 0 and "is complete" in limits.stdout, limits.stdout + limits.stderr


def test_a_run_stopped_with_ctrl_c_ends_complete(tmp_path: Path) -> None:
    run = AttachedRun(tmp_path, rows=2)
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: run.statuses().get("launched") == 2, message="units launched")
        run.interrupt()
        assert run.wait(30) == 0, run.text()
    finally:
        run.kill()
    assert run.statuses() == {"expired": 2}
    assert run_row(run)[1] == 1


def test_two_attached_runs_share_the_embedded_redis_until_the_last_exits(tmp_path: Path) -> None:
    shared = tmp_path / "shared-data"
    env = {"MEPHISTO_DIST_DATA_DIR": str(shared)}
    first = AttachedRun(tmp_path / "a", rows=2, env=env)
    first.data_dir = shared
    second: AttachedRun | None = None
    client = redis.Redis(unix_socket_path=str(shared / "redis.sock"), socket_timeout=2)
    try:
        first.wait_for_output(r"Open the task as a worker")
        second = AttachedRun(tmp_path / "b", rows=2, env=env)
        second.data_dir = shared
        second.wait_for_output(r"Open the task as a worker")
        agent = second.register("w1")
        assert agent["agent_id"], agent
        first.interrupt()  # the one that started the embedded Redis exits first
        assert first.wait(60) == 0, first.text()
        assert client.ping()
        assert second.submit(agent["agent_id"]).status_code == 200
        other = second.register("w2")
        assert other["agent_id"], other
        assert second.submit(other["agent_id"]).status_code == 200
        assert second.wait(60) == 0, second.text()
        assert "Redis is not answering" not in second.text()
        assert "2 completed" in second.text()

        def gone() -> bool:
            try:
                client.ping()
            except redis.ConnectionError:
                return True
            return False

        wait_for(gone, timeout_s=30, message="the embedded Redis to stop after its last user")
    finally:
        client.close()
        first.kill()
        if second is not None:
            second.kill()
