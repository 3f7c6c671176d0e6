"""One beat per deployment (celery-redbeat's lock in Redis) and the heartbeats of beat and workers, with
real beat and worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from mephisto_dist import heartbeats
from mephisto_dist.domain.diagnosis import QUEUE_BACKLOG
from mephisto_dist.queue import LIVE_QUEUE, RECONCILE_RUNS, CeleryQueue
from tests.conftest import wait_for
from tests.system import ROOT, celery_beat, celery_worker, child_env, make_runtime

pytestmark = pytest.mark.system

SENT = "Sending due task"  # logged at DEBUG: these tests run beat at DEBUG to count its rounds


def _settings(tmp_path: Path, redis_url: str):  # type: ignore[no-untyped-def]
    runtime = make_runtime(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", redis_url,
                           BEAT_LOCK_TIMEOUT_S="3", HEARTBEAT_EVERY_S="1", RUN_SWEEP_EVERY_S="1",
                           POOL_RENEW_EVERY_S="1")
    runtime.close()
    return runtime.settings


def _sent(log: Path) -> int:
    return log.read_text(errors="replace").count(SENT) if log.exists() else 0


def test_a_second_beat_fires_nothing_until_the_first_dies(tmp_path: Path, redis_url: str,
                                                          redis_client: redis.Redis) -> None:
    settings = _settings(tmp_path, redis_url)
    first_log, second_log = tmp_path / "beat1.log", tmp_path / "beat2.log"
    with celery_beat(settings, first_log, loglevel="DEBUG") as first:
        wait_for(lambda: _sent(first_log) >= 2, timeout_s=30, message="the first beat to fire")
        with celery_beat(settings, second_log, loglevel="DEBUG") as second:
            wait_for(lambda: "beat: Starting" in second_log.read_text(errors="replace"), timeout_s=30,
                     message="the second beat to start")
            # The first keeps firing for several more rounds while the second is up and waiting.
            fired_before = _sent(first_log)
            wait_for(lambda: _sent(first_log) >= fired_before + 6, timeout_s=30,
                     message="the first beat to fire more rounds")
            assert _sent(second_log) == 0, second_log.read_text()
            assert second.poll() is None
            seen = heartbeats.last_seen(redis_client, "beat")
            assert [s.name.rsplit(":", 1)[1] for s in seen] == [str(first.pid)]

            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            wait_for(lambda: _sent(second_log) >= 1, timeout_s=30,
                     message="the second beat to take over after the first was killed")
            wait_for(lambda: heartbeats.last_seen(redis_client, "beat")[0].name.endswith(f":{second.pid}"),
                     timeout_s=10, message="the second beat's heartbeat")


def test_workers_leave_heartbeats(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    settings = _settings(tmp_path, redis_url)
    assert heartbeats.last_seen(redis_client, "worker") == []
    with celery_worker(settings, tmp_path / "worker.log", concurrency=1):
        seen = wait_for(lambda: heartbeats.last_seen(redis_client, "worker"), timeout_s=20,
                        message="a worker heartbeat")
        assert seen[0].name.startswith("test-")
        key = "mephisto-dist:heartbeat:worker"
        first_score = redis_client.zscore(key, seen[0].name)
        assert first_score is not None
        # It keeps beating while idle.
        wait_for(lambda: (redis_client.zscore(key, seen[0].name) or 0) > first_score, timeout_s=10,
                 message="a further heartbeat")


def _status(settings, *args: str) -> str:  # type: ignore[no-untyped-def]
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "status", *args], cwd=ROOT,
                            env=child_env(settings), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())


def test_status_says_when_no_worker_answers_and_beat_is_not_running(tmp_path: Path, redis_url: str) -> None:
    settings = _settings(tmp_path, redis_url)
    said = _status(settings)
    assert "no Celery worker has been seen" in said and "beat is not running (never seen)" in said, said
    with celery_worker(settings, tmp_path / "worker.log", concurrency=1), \
            celery_beat(settings, tmp_path / "beat.log"):
        wait_for(lambda: "beat: running" in _status(settings), timeout_s=30, message="status to see beat")
        said = _status(settings)
        assert "celery workers: 1 answering" in said and "→" not in said, said
    # Both gone: after three missed heartbeats status says so, with how long ago each was seen. Each goes
    # stale three heartbeats after its own last one (the worker's may be a second after beat's).
    said = wait_for(lambda: next((s for s in [_status(settings)] if "beat is not running: last seen" in s
                                  and "no Celery worker answers: the last one was seen" in s), None),
                    timeout_s=30, message="status to notice beat and the worker are gone")
    assert "celery workers: 0 answering (last seen: test-" in said, said


def test_status_counts_the_tasks_no_worker_takes(tmp_path: Path, redis_url: str) -> None:
    """A worker that answers but takes nothing (here: one started for remote calls only, ``-Q live``; a
    worker that stopped consuming after a broker restart looks the same) leaves the default queue growing;
    status counts it and, past QUEUE_BACKLOG, says what it may mean."""
    settings = _settings(tmp_path, redis_url)
    queue = CeleryQueue(settings.broker_url)
    try:
        with celery_worker(settings, tmp_path / "worker.log", concurrency=1, queues=[LIVE_QUEUE]):
            wait_for(lambda: "celery workers: 1 answering" in _status(settings), timeout_s=30,
                     message="status to see the worker")
            queue.enqueue(RECONCILE_RUNS)
            said = _status(settings)
            assert "1 task(s) waiting in the queue" in said and "although a Celery worker answers" not in said, said
            for _ in range(QUEUE_BACKLOG - 1):
                queue.enqueue(RECONCILE_RUNS)
            said = _status(settings)
            assert f"{QUEUE_BACKLOG} task(s) waiting in the queue" in said, said
            assert f"{QUEUE_BACKLOG} tasks wait in the queue although a Celery worker answers" in said, said
    finally:
        queue.close()
