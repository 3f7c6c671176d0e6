"""Stopping runs with real processes and signals: Ctrl-C once and twice on an attached run, shutdown
from another process, timeouts and stalls driven by beat, and resume after every process died."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import wait_for
from tests.system import ROOT, free_port
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system


class AttachedRun:
    """``mephisto-dist run`` on the embedded default, its output collected as it comes."""

    def __init__(self, tmp_path: Path, *args: str, rows: int = 4, extra_yaml: str = "",
                 env: dict[str, str] | None = None, command: str = "run") -> None:
        self.port = free_port()
        self.data_dir = tmp_path / "data"
        self.task_dir = write_task_dir(tmp_path, rows=rows, port=self.port, extra_yaml=extra_yaml)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
        self.env.update({"MEPHISTO_DIST_DATA_DIR": str(self.data_dir), "COLUMNS": "200"})
        self.env.update(env or {})
        target = [str(self.task_dir)] if command == "run" else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.cli.app", command, *target, *args], cwd=ROOT, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def text(self) -> str:
        return "".join(self.output)

    def wait_for_output(self, pattern: str, timeout_s: float = 40) -> re.Match[str]:
        return wait_for(lambda: re.search(pattern, self.text()), timeout_s=timeout_s,  # type: ignore[no-any-return]
                        message=f"{pattern!r} in the output:\n{self.text()}")

    def interrupt(self) -> None:
        os.kill(self.process.pid, signal.SIGINT)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def register(self, worker: str) -> dict[str, object]:
        data = httpx.post(self.url + "/request_agent", json={"provider_data": {
            "worker_name": worker, "assignment_id": "a", "agent_registration_id": f"a-{worker}",
            "provider_type": "mock"}}).json()["data"]
        assert isinstance(data, dict)
        return data

    def submit(self, agent_id: object) -> httpx.Response:
        return httpx.post(self.url + "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": {"r": "1"}})

    def statuses(self) -> dict[str, int]:
        engine = create_engine(f"sqlite:///{self.data_dir / 'mephisto-dist.db'}")
        try:
            with engine.connect() as connection:
                return dict(connection.execute(text("select status, count(*) from unit group by status")).all())
        finally:
            engine.dispose()

    def agent_statuses(self) -> dict[str, int]:
        engine = create_engine(f"sqlite:///{self.data_dir / 'mephisto-dist.db'}")
        try:
            with engine.connect() as connection:
                return dict(connection.execute(text("select status, count(*) from agent group by status")).all())
        finally:
            engine.dispose()


def test_ctrl_c_once_drains_then_exits_cleanly(tmp_path: Path) -> None:
    run = AttachedRun(tmp_path, rows=4)
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: run.statuses().get("launched") == 4, message="units launched")
        first = run.register("w1")
        second = run.register("w2")
        assert first["agent_id"] and second["agent_id"]
        run.interrupt()
        run.wait_for_output(r"waiting on 2 units in flight; Ctrl-C again to force quit")
        assert run.statuses() == {"expired": 2, "assigned": 2}
        assert run.register("w3")["agent_id"] is None  # nothing is offered any more
        assert run.submit(first["agent_id"]).status_code == 200
        run.wait_for_output(r"waiting on 1 units in flight")
        assert run.submit(second["agent_id"]).status_code == 200
        assert run.wait(30) == 0, run.text()
    finally:
        run.kill()
    assert "2 completed, 2 expired" in run.text()
    assert run.statuses() == {"expired": 2, "completed": 2}


def test_ctrl_c_twice_forces_within_ten_seconds_and_keeps_submitted_work(tmp_path: Path) -> None:
    run = AttachedRun(tmp_path, rows=3)
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: run.statuses().get("launched") == 3, message="units launched")
        done = run.register("w1")
        assert run.submit(done["agent_id"]).status_code == 200
        active = run.register("w2")
        assert active["agent_id"]
        run.interrupt()
        run.wait_for_output(r"waiting on 1 units in flight")
        started = time.monotonic()
        run.interrupt()
        code = run.wait(10)
        elapsed = time.monotonic() - started
    finally:
        run.kill()
    assert code == 130, run.text()
    assert elapsed < 10
    assert run.statuses() == {"completed": 1, "expired": 2}
    assert run.agent_statuses() == {"completed": 1, "disconnect": 1}


def _external_env(tmp_path: Path, redis_url: str, **extra: str) -> dict[str, str]:
    env = {"MEPHISTO_DIST_REDIS_URL": redis_url,
           "MEPHISTO_DIST_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'mephisto-dist.db'}",
           "MEPHISTO_DIST_RUN_SWEEP_EVERY_S": "0.3", "MEPHISTO_DIST_POOL_RENEW_EVERY_S": "0.5"}
    env.update(extra)
    return env


def cli(run: AttachedRun, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT, env=run.env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_detached_run_is_shut_down_from_another_process(tmp_path: Path, redis_url: str) -> None:
    """The attached CLI of a run is gone (killed); ``shutdown`` from elsewhere still stops it, and a
    resumed run finishes the drain."""
    run = AttachedRun(tmp_path, rows=3, env=_external_env(tmp_path, redis_url))
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: run.statuses().get("launched") == 3, message="units launched")
        agent = run.register("w1")
        assert agent["agent_id"]
    finally:
        run.kill()  # every process of the run dies with it
    result = cli(run, "shutdown", "1")
    assert result.returncode == 0, result.stderr
    assert "2 available unit(s) expired; waiting on 1 unit(s) in flight" in result.stdout
    status = cli(run, "status", "1")
    assert "the run is stopping" in status.stdout and "does NOT answer" in status.stdout, status.stdout
    forced = cli(run, "shutdown", "1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert run.statuses() == {"expired": 3}
    again = cli(run, "shutdown", "1")
    assert again.returncode == 2 and "already complete" in again.stderr


def test_an_overdue_unit_times_out_goes_to_another_worker_and_refuses_the_late_submit(
        tmp_path: Path, redis_url: str) -> None:
    run = AttachedRun(tmp_path, rows=1, env=_external_env(tmp_path, redis_url),
                      extra_yaml="    assignment_duration_in_seconds: 1\n")
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: run.statuses().get("launched") == 1, message="the unit launched")
        slow = run.register("slow")
        assert slow["agent_id"]
        wait_for(lambda: run.statuses().get("launched") == 1 and run.agent_statuses().get("timeout") == 1,
                 message="beat to time the unit out")
        late = run.submit(slow["agent_id"])
        assert late.status_code == 409 and "time allowed for this unit ran out" in late.json()["error"]
        fast = run.register("fast")
        assert fast["agent_id"] and fast["agent_id"] != slow["agent_id"]
        assert run.submit(fast["agent_id"]).status_code == 200
        assert run.wait(30) == 0, run.text()
    finally:
        run.kill()
    assert run.statuses() == {"completed": 1}


def test_a_run_without_submissions_shuts_itself_down_after_its_patience(tmp_path: Path, redis_url: str) -> None:
    run = AttachedRun(tmp_path, rows=2, env=_external_env(tmp_path, redis_url),
                      extra_yaml="    no_submission_patience: 2\n")
    try:
        run.wait_for_output(r"the run is stopping: no submission for no_submission_patience \(2 s\)")
        assert run.wait(30) == 0, run.text()
    finally:
        run.kill()
    assert run.statuses() == {"expired": 2}
    result = cli(run, "runs")
    assert "test-task" in result.stdout and "expired 2" in result.stdout, result.stdout


def test_resume_after_every_process_died_redoes_nothing(tmp_path: Path, redis_url: str) -> None:
    run = AttachedRun(tmp_path, rows=4, env=_external_env(tmp_path, redis_url))
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: run.statuses().get("launched") == 4, message="units launched")
        done = run.register("w1")
        assert run.submit(done["agent_id"]).status_code == 200
        held = run.register("w2")
        assert held["agent_id"]
    finally:
        run.kill()
    resumed = AttachedRun(tmp_path, "1", command="resume", env=_external_env(tmp_path, redis_url))
    resumed.port, resumed.url = run.port, run.url
    resumed.task_dir, resumed.data_dir = run.task_dir, run.data_dir
    try:
        resumed.wait_for_output(r"Open the task as a worker")
        # w2 still holds its unit and can finish it on the resumed server; nothing completed is re-offered.
        assert resumed.submit(held["agent_id"]).status_code == 200
        assert resumed.register("w1")["agent_id"] is None
        for worker in ("w3", "w4"):
            agent = resumed.register(worker)
            assert agent["agent_id"], agent
            assert resumed.submit(agent["agent_id"]).status_code == 200
        assert resumed.wait(30) == 0, resumed.text()
    finally:
        resumed.kill()
    assert resumed.statuses() == {"completed": 4}


def test_run_with_resume_incomplete_run_picks_up_the_unfinished_run(tmp_path: Path, redis_url: str) -> None:
    run = AttachedRun(tmp_path, rows=2, env=_external_env(tmp_path, redis_url))
    try:
        run.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: run.statuses().get("launched") == 2, message="units launched")
        first = run.register("w1")
        assert run.submit(first["agent_id"]).status_code == 200
    finally:
        run.kill()
    again = AttachedRun(tmp_path, "mephisto.task.resume_incomplete_run=true", rows=2,
                        env=_external_env(tmp_path, redis_url))
    again.port, again.url = run.port, run.url  # the stored run's port, not the new folder's
    try:
        again.wait_for_output(r"resuming incomplete task run 1 of test-task")
        again.wait_for_output(r"Open the task as a worker")
        second = again.register("w2")
        assert second["agent_id"] and again.submit(second["agent_id"]).status_code == 200
        assert again.wait(30) == 0, again.text()
    finally:
        again.kill()
    assert again.statuses() == {"completed": 2}
    engine_text = cli(again, "runs")
    assert engine_text.stdout.count("test-task") == 1, engine_text.stdout  # no second run was created
