"""A worker outlives its broker's restart while it is running a task.

Celery 5.7.0's worker, on losing the broker, closes the connection a second time after collecting it;
with a task unacknowledged and the consumer waiting on BRPOP, kombu's second close goes looking for a
transport the first one let go, and the worker stopped on "Unrecoverable error: AttributeError". A
deployment's worker must come back on its own (beat's work, the runs' launches wait for it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.system import KillableRedis, celery_worker, make_runtime

pytestmark = pytest.mark.system


def test_a_worker_running_a_task_when_redis_restarts_goes_on_consuming(tmp_path: Path, sqlite_url: str) -> None:
    server = KillableRedis(tmp_path / "redis")
    server.start()
    rt = make_runtime(tmp_path / "data", sqlite_url, server.url)
    log = tmp_path / "worker.log"
    try:
        with celery_worker(rt.settings, log, app="tests.broker_app") as worker:
            rt.queue.enqueue("tests.sleep", 3.0)  # a name no route names: the default queue
            wait_for(lambda: re.search(rb"tests\.sleep\[[^]]+\] received", log.read_bytes()), timeout_s=30,
                     message="the worker to start the slow task")
            server.kill()
            wait_for(lambda: b"Connection to broker lost" in log.read_bytes(), timeout_s=30,
                     message="the worker to notice the broker is gone")
            server.start()
            done = tmp_path / "done"
            rt.queue.enqueue("tests.touch", str(done))
            wait_for(lambda: worker.poll() is not None or done.exists(), timeout_s=60,
                     message="the worker to run a task sent after the restart")
            assert worker.poll() is None, log.read_text()[-3000:]
            # The slow task, received on the lost connection, ends (its acknowledgement has nowhere to
            # go) and the worker goes on.
            wait_for(lambda: worker.poll() is not None or re.search(rb"tests\.sleep\[[^]]+\] succeeded", log.read_bytes()),
                     timeout_s=30, message="the slow task to end")
            again = tmp_path / "again"
            rt.queue.enqueue("tests.touch", str(again))
            wait_for(lambda: worker.poll() is not None or again.exists(), timeout_s=60,
                     message="the worker to run a task sent after the slow one ended")
            assert worker.poll() is None, log.read_text()[-3000:]
            assert b"Unrecoverable error" not in log.read_bytes()
    finally:
        rt.close()
        server.stop()
