"""The web process's event loop only does I/O: a task hook that blocks (here ``worker_can_do_unit``,
waiting for a file) holds its own request, while the same process keeps answering others. On SQLite the
hot path used to run on the loop, so one slow hook froze every request and live socket of the process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import celery_worker, register, web_server
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
