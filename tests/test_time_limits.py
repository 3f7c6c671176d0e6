"""Time bounds: every beat entry expires, so rounds queued behind a worker outage are dropped rather than
run; every Celery task the worker registers has a soft and a hard time limit. The apps are read from
real worker and beat processes' imports (``mephisto_dist.celery``); the backlog is dropped by a real beat and worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mephisto_dist.celery.schedule import MIN_EXPIRES_S, make_schedule
from mephisto_dist.queue import celery_config
from mephisto_dist.settings import Settings, load_settings
from tests.conftest import wait_for
from tests.system import ROOT, celery_beat, celery_worker, child_env, make_runtime

pytestmark = pytest.mark.system

READ_APPS = """
import json
from mephisto_dist.celery import beat, worker
print(json.dumps({
    "tasks": {name: [task.soft_time_limit, task.time_limit] for name, task in worker.app.tasks.items()},
    "schedule": {name: [entry["task"], entry["schedule"], entry.get("options", {}).get("expires")]
                 for name, entry in beat.app.conf.beat_schedule.items()},
}))
"""


def _settings(tmp_path: Path, redis_url: str, **env: str) -> Settings:
    runtime = make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", redis_url, **env)
    runtime.close()
    return runtime.settings


def _apps(settings: Settings) -> dict[str, dict[str, list[object]]]:
    """What the Celery worker app registers and the beat app schedules, read in a process of its own."""
    done = subprocess.run([sys.executable, "-c", READ_APPS], cwd=ROOT, env=child_env(settings),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    apps: dict[str, dict[str, list[object]]] = json.loads(done.stdout.strip().splitlines()[-1])
    return apps


def test_every_schedule_entry_expires_within_its_period_or_the_floor() -> None:
    for settings in (load_settings({}), load_settings({"MEPHISTO_DIST_LIVE_SWEEP_EVERY_S": "0.3",
                                                      "MEPHISTO_DIST_RECONCILE_EVERY_S": "600"})):
        schedule = make_schedule(settings)
        assert schedule
        for name, entry in schedule.items():
            period_s = float(entry["schedule"])
            expires_s = entry.get("options", {}).get("expires")
            assert expires_s is not None, f"{name} never expires"
            assert 0 < expires_s <= max(period_s, MIN_EXPIRES_S), (name, period_s, expires_s)


def test_every_registered_task_has_a_soft_and_a_hard_time_limit(tmp_path: Path, redis_url: str) -> None:
    settings = _settings(tmp_path, redis_url, REMOTE_CALL_TIMEOUT_S="7")
    apps = _apps(settings)
    ours = {name for name in apps["tasks"] if name.startswith("mephisto_dist.")}
    assert len(ours) >= 13, apps["tasks"]
    visibility_timeout_s = celery_config("redis://")["broker_transport_options"]["visibility_timeout"]
    for name, (soft_s, hard_s) in apps["tasks"].items():
        assert soft_s is not None and hard_s is not None, f"{name} has no time limit"
        assert isinstance(soft_s, float) and isinstance(hard_s, float)
        assert 0 < soft_s < hard_s < visibility_timeout_s, (name, soft_s, hard_s)
    # The remote call's limit is the setting: the page is answered at it.
    assert apps["tasks"]["mephisto_dist.remote_call"][0] == 7.0
    # The schedule beat really runs expires too, and names only registered tasks.
    for name, (task, period_s, expires_s) in apps["schedule"].items():
        assert task in ours, name
        assert isinstance(period_s, float) and isinstance(expires_s, float)
        assert 0 < expires_s <= max(period_s, MIN_EXPIRES_S), (name, period_s, expires_s)


def _count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def test_rounds_queued_while_no_worker_runs_are_dropped_not_run(tmp_path: Path, redis_url: str) -> None:
    every_s = 0.5
    settings = _settings(tmp_path, redis_url, LIVE_SWEEP_EVERY_S=str(every_s), HEARTBEAT_EVERY_S="1")
    beat_log, worker_log = tmp_path / "beat.log", tmp_path / "worker.log"
    sweep = "mephisto_dist.live_sweep"
    with celery_beat(settings, beat_log, loglevel="DEBUG"):  # an idle sweep's lines are DEBUG
        # Twice the expiry's worth of rounds with no worker: the first half is stale by then.
        backlog = int(2 * MIN_EXPIRES_S / every_s)
        wait_for(lambda: _count(beat_log, f"Sending due task disconnect-silent-pages-and-recover-calls ({sweep})")
                 >= backlog, timeout_s=60, message="beat to queue a backlog of live sweeps")
        with celery_worker(settings, worker_log, concurrency=1, loglevel="DEBUG"):
            wait_for(lambda: _count(worker_log, f"Discarding revoked task: {sweep}[") >= 1, timeout_s=30,
                     message="the worker to drop an expired live sweep")
            # Rounds still fresh, and those beat sends from now on, run as usual.
            wait_for(lambda: any(f"Task {sweep}[" in line and "] succeeded in" in line
                                 for line in worker_log.read_text(errors="replace").splitlines()),
                     timeout_s=30, message="the worker to run a fresh live sweep")
