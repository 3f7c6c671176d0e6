"""The web process's event loop waits for nothing: a task hook that blocks (here ``worker_can_do_unit``,
waiting for a file) holds its own request, while the same process keeps answering others. On SQLite the
hot path once ran on the loop whatever it did, so one slow hook froze every request and live socket of
the process. Now it runs there only for a run whose hot path calls nothing but SQLite, and only when
SQLite's write lock is free: a request meeting another process's write waits for it on a thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import celery_worker, make_runtime, register, web_server
from tests.taskdirs import write_task_dir
from tests.test_hooks import hooked_task_dir, launched

pytestmark = pytest.mark.system


def test_a_blocked_hook_holds_only_its_own_request(tmp_path: Path, runtime: Runtime) -> None:
    entered, release = tmp_path / "entered", tmp_path / "release"
    hooks_source = f"""
import os, threading, time
from pathlib import Path


def worker_can_do_unit(worker_name, unit_data):
    if worker_name == "slow":
        Path({str(entered)!r}).touch()
        deadline = time.monotonic() + 120
        pause = threading.Event()  # never set: a wait with a timeout, polling the release file
        while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
            pause.wait(0.02)
    return True
"""
    task_dir = hooked_task_dir(tmp_path, hooks_source, rows=2)
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(runtime, run_id)
        wait_for(lambda: launched(runtime, run_id) == 2, message="the worker to launch 2 units")
        slow: dict[str, Any] = {}
        asking = threading.Thread(target=lambda: slow.update(register(url, "slow")), daemon=True)
        asking.start()
        try:
            wait_for(entered.exists, timeout_s=30, message="the hook to start for the slow worker")
            # While the hook blocks, the process answers: its loop is free.
            assert httpx.get(url + "/is_alive", timeout=10).status_code == 200
            assert httpx.get(url + "/task_config.json", timeout=10).status_code == 200
            assert httpx.get(url + "/?worker_id=someone&assignment_id=a9", timeout=10).status_code == 200
            assert asking.is_alive() and not slow, "the slow registration ended before the hook was released"
        finally:
            release.touch()
        asking.join(30)
        assert slow["agent_id"], slow
        # The process serves the next worker as before.
        assert register(url, "quick", "a2")["agent_id"]


def test_a_request_meeting_another_processs_write_waits_for_it_off_the_loop(tmp_path: Path, sqlite_url: str,
                                                                            redis_url: str) -> None:
    """A plain run (its hot path runs on the loop when SQLite is free) while another connection holds
    SQLite's write lock, as a launch or beat's sweep in another process does: the registration waits
    for the writer, the loop answers meanwhile, and the registration goes through once the lock is free."""
    runtime = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    try:
        task_dir = write_task_dir(tmp_path, rows=3, architect="mock")
        run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
        assert runtime.engine.url.database
        with celery_worker(runtime.settings, tmp_path / "worker.log"), \
                web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
            enqueue_launch(runtime, run_id)
            wait_for(lambda: launched(runtime, run_id) == 3, message="the worker to launch 3 units")
            assert register(url, "first", "a1")["agent_id"]  # the run is read and judged: on the loop now
            other = sqlite3.connect(runtime.engine.url.database, isolation_level=None, check_same_thread=False)
            answer: dict[str, Any] = {}
            asking = threading.Thread(target=lambda: answer.update(register(url, "second", "a2")), daemon=True)
            other.execute("BEGIN IMMEDIATE")
            try:
                asking.start()
                asking.join(1.0)
                assert asking.is_alive() and not answer, "the registration did not wait for the other writer"
                # The loop is free: SQLite's busy wait (30 s) would have held it, and these with it.
                assert httpx.get(url + "/is_alive", timeout=5).status_code == 200
                assert httpx.get(url + "/task_config.json", timeout=5).status_code == 200
                assert asking.is_alive() and not answer
            finally:
                other.execute("COMMIT")
                other.close()
            asking.join(30)
            assert answer["agent_id"], answer
            assert register(url, "third", "a3")["agent_id"]
    finally:
        runtime.close()
