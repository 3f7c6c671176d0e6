"""A ``run`` that fails to start leaves nothing open behind it (issue 24, item 1): its services are
checked before the run is created, and a run whose start fails after it was created is closed again, so
it holds no port, no concurrency token and nothing on the provider."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import TaskRun, Unit
from mephisto_dist.providers import make_provider
from mephisto_dist.runs.launches import LaunchContext, launch_units, run_pool
from mephisto_dist.runs.preparation import check_port_unclaimed, create_run, prepare_run
from mephisto_dist.runs.stopping import undo_failed_start
from mephisto_dist.runs.task_runs import run_on_port
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import free_port
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

DEAD_REDIS = "redis://127.0.0.1:1/0"


def run_cli(data_dir: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update(MEPHISTO_DIST_DATA_DIR=str(data_dir), COLUMNS="200", **env_extra)
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
def test_unreachable_redis_creates_no_run_and_frees_the_port(tmp_path: Path, detach: bool) -> None:
    """The issue's reproduction: Redis unreachable, then the same port is used by a good run."""
    task_dir = write_task_dir(tmp_path, rows=3)
    data = tmp_path / "data"
    port = str(free_port())
    flags = ["--detach"] if detach else []
    failed = run_cli(data, "run", *flags, str(task_dir), f"mephisto.architect.port={port}",
                     MEPHISTO_DIST_REDIS_URL=DEAD_REDIS)
    assert failed.returncode == 3, failed.stdout + failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Redis at redis://127.0.0.1:1/0"), lines
    assert "no task run was created" in lines[0]

    listed = run_cli(data, "runs")
    assert listed.returncode == 0, listed.stderr
    assert "created 3" not in listed.stdout

    # The same port serves the next run: nothing refuses it as held by a failed one.
    good = run_cli(data, "run", str(task_dir), f"mephisto.architect.port={port}",
                   "mephisto.task.task_lifetime_in_seconds=3")
    assert "is served for open task run" not in good.stderr, good.stderr
    assert "launched in" in good.stdout, good.stdout + good.stderr


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_failed_start_is_closed_with_its_tokens_and_port_given_back(runtime: Runtime, tmp_path: Path) -> None:
    """After create_run, the start failed with units launched and holding tokens of a capped run."""
    port = free_port()
    task_dir = write_task_dir(tmp_path, rows=4, cap=2, port=port)
    prepared = prepare_run(task_dir, "example", [], check_port=False)
    run_id = create_run(runtime, prepared)
    launched = launch_units(runtime.sessions, LaunchContext.of(runtime, make_provider("mock")), run_id,
                            now=datetime.now(UTC))
    assert launched == 2 and runtime.limiter.held(run_pool(run_id)) == 2
    with transaction(runtime.sessions) as session:
        assert run_on_port(session, port) == (run_id, "test-task")

    undo_failed_start(runtime, run_id, "the web server did not answer on port 1", now=datetime.now(UTC))

    with read_transaction(runtime.sessions) as session:
        run = session.get(TaskRun, run_id)
        assert run is not None and run.is_completed
        assert run.shutdown_reason == "failed to start: the web server did not answer on port 1"
        statuses = set(session.scalars(select(Unit.status).where(Unit.task_run_id == run_id)))
    assert statuses == {"expired"}
    assert runtime.limiter.held(run_pool(run_id)) == 0
    check_port_unclaimed(runtime, prepared.server)  # raises while a run holds the port


def test_status_of_a_run_whose_command_is_gone_leads_to_resume(tmp_path: Path) -> None:
    """Issue 24, item 3: the terminal of an attached run is closed (SIGHUP to its process group); plain
    ``status`` and ``status RUN`` say no command serves the run and name ``resume`` and ``shutdown``
    instead of reporting Redis down and a server running; ``resume`` then serves it again."""
    task_dir = write_task_dir(tmp_path, rows=3, port=free_port())
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update(MEPHISTO_DIST_DATA_DIR=str(data), COLUMNS="200", MEPHISTO_DIST_HEARTBEAT_EVERY_S="1")
    # SIGHUP as a terminal's: taken by default even when the suite runs under nohup (which ignores it).
    attached = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                preexec_fn=_hangup_by_default)  # noqa: PLW1509
    try:
        assert attached.stdout is not None
        for line in attached.stdout:
            if "launched in" in line:
                break
        else:
            raise AssertionError("the run never said it launched")
    finally:
        os.killpg(attached.pid, signal.SIGHUP)  # the terminal closed: the command and its children go
        attached.wait(timeout=30)
    wait_for(lambda: not _group_alive(attached.pid), timeout_s=30, interval_s=0.2,
             message="the run's processes to go with their terminal")
    # Past three missed heartbeats of 1 s, the server's record is known silent.
    wait_for(lambda: "not answering (recorded running" in run_cli(data, "status", MEPHISTO_DIST_HEARTBEAT_EVERY_S="1")
             .stdout, timeout_s=30, interval_s=0.5, message="status to see the server's heartbeats stopped")

    one = run_cli(data, "status", "1", MEPHISTO_DIST_HEARTBEAT_EVERY_S="1")
    said = " ".join(one.stdout.split())
    assert one.returncode == 0, one.stderr
    assert "no `mephisto-dist run` is serving task run 1 now" in said, said
    assert "`mephisto-dist resume 1` starts them again" in said and "`mephisto-dist shutdown 1` ends the run" in said
    assert "Redis does not answer" not in said and "? held" not in said

    every = run_cli(data, "status", MEPHISTO_DIST_HEARTBEAT_EVERY_S="1")
    said = " ".join(every.stdout.split())
    assert every.returncode == 0, every.stderr
    assert "Redis does not answer" not in said and ": running (" not in said, said
    assert "not answering (recorded running, but its heartbeats stopped)" in said, said
    assert "task run 1 is served by no `mephisto-dist run` now: `mephisto-dist resume 1` carries on" in said, said

    stopped = run_cli(data, "shutdown", "1")
    assert stopped.returncode == 0 and "task run 1 stopped: 3 available unit(s) expired" in stopped.stdout, \
        stopped.stdout + stopped.stderr
    after = run_cli(data, "status")
    assert "open task runs: none" in after.stdout, after.stdout


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _hangup_by_default() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
