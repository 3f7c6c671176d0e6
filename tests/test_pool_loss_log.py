"""A concurrency pool is said to be lost only when it was: a new capped run builds its pool on its first
launch without a word, and after a FLUSHALL beat's pool sweep (the Celery task as beat fires it) says so
once, however many sweeps and launches follow. Real Redis, SQLite and PostgreSQL; no process started."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from mephisto_dist.providers import make_provider
from mephisto_dist.runs.launches import LaunchContext, launch_units, run_pool
from mephisto_dist.runs.preparation import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from tests.taskdirs import write_task_dir

LOST = "was lost"


def sweep_as_beat_does(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run beat's pool task body in this process, on this runtime."""
    import mephisto_dist.celery.worker  # noqa: F401  (first: it imports the task modules, as a worker does)
    from mephisto_dist.celery import tasks

    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    tasks.reconcile_pools_task()


def lost_lines(caplog: pytest.LogCaptureFixture, pool: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if LOST in r.getMessage() and pool in r.getMessage()]


def test_a_new_capped_run_is_quiet_and_a_flushed_pool_is_reported_once(
        tmp_path: Path, runtime: Runtime, redis_url: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO)
    task_dir = write_task_dir(tmp_path, rows=6, architect="mock", cap=2)
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    pool = run_pool(run_id)
    ctx = LaunchContext.of(runtime, make_provider("mock"))

    assert launch_units(runtime.sessions, ctx, run_id, now=datetime.now(UTC)) == 2
    sweep_as_beat_does(runtime, monkeypatch)
    assert [r.getMessage() for r in caplog.records if LOST in r.getMessage()] == []
    assert runtime.limiter.held(pool) == 2

    client = redis.Redis.from_url(redis_url)
    client.flushall()  # Redis restarted: the pool and its ready marker are gone, two units still out
    client.close()
    sweep_as_beat_does(runtime, monkeypatch)
    sweep_as_beat_does(runtime, monkeypatch)
    assert launch_units(runtime.sessions, ctx, run_id, now=datetime.now(UTC)) == 0  # the cap holds
    assert lost_lines(caplog, pool) == [
        (f"concurrency pool {pool} was lost (Redis restarted or was flushed, or a lease ran out while beat was "
         "not renewing it): rebuilt with 2 tokens")]
    assert runtime.limiter.held(pool) == 2
    # No deployment cap: the deployment's pool is a figure beat keeps, and rebuilding it is no loss.
    assert [r.getMessage() for r in caplog.records if LOST in r.getMessage()] == lost_lines(caplog, pool)
