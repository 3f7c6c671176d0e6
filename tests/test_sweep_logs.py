"""Beat's sweeps log at INFO only when they did something: idle rounds of a real beat and worker leave no
line at INFO, and the filter passes a round that did something, as Celery logs it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import redis

from mephisto_dist import queue
from mephisto_dist.celery.sweep_logs import (
    RECEIVED,
    RECEIVED_BY,
    SENT,
    SUCCEEDED,
    SUCCEEDED_BY,
    quiet_idle_sweeps,
)
from mephisto_dist.heartbeats import keys as heartbeat_keys
from tests.conftest import wait_for
from tests.system import celery_beat, celery_worker, make_runtime

SWEEP = queue.LIVE_SWEEP


def _round(logger: str, msg: str, args: object) -> None:
    logging.getLogger(logger).info(msg, args)


def _context(return_value: str) -> dict[str, object]:
    return {"id": "abc", "name": SWEEP, "return_value": return_value, "runtime": 0.01, "args": "()", "kwargs": "{}"}


def test_idle_rounds_are_debug_and_busy_ones_info(caplog: pytest.LogCaptureFixture) -> None:
    quiet_idle_sweeps({SWEEP, queue.RESEND_OUTBOX})
    caplog.set_level(logging.INFO)
    logging.getLogger("celery.beat").info(SENT, "disconnect-silent-pages-and-recover-calls", SWEEP)
    _round(RECEIVED_BY, RECEIVED, _context(""))
    _round(SUCCEEDED_BY, SUCCEEDED, _context("{'disconnected': 0, 'ended': 0, 'calls_rerun': 0, 'calls_failed': 0}"))
    _round(SUCCEEDED_BY, SUCCEEDED, _context("None"))
    _round(SUCCEEDED_BY, SUCCEEDED, _context("0"))
    assert caplog.records == []
    _round(SUCCEEDED_BY, SUCCEEDED, _context("{'disconnected': 2, 'ended': 0, 'calls_rerun': 0, 'calls_failed': 0}"))
    _round(SUCCEEDED_BY, SUCCEEDED, {**_context("3"), "name": queue.RESEND_OUTBOX})
    _round(RECEIVED_BY, RECEIVED, {**_context(""), "name": "mephisto_dist.launch_units"})  # not a sweep
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, (f"Task {SWEEP}[abc] succeeded in 0.01s: "
                        "{'disconnected': 2, 'ended': 0, 'calls_rerun': 0, 'calls_failed': 0}")),
        (logging.INFO, f"Task {queue.RESEND_OUTBOX}[abc] succeeded in 0.01s: 3"),
        (logging.INFO, "Task mephisto_dist.launch_units[abc] received")]
    caplog.clear()
    caplog.set_level(logging.DEBUG)  # at DEBUG the idle round is there, as DEBUG
    _round(SUCCEEDED_BY, SUCCEEDED, _context("None"))
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def _rounds(client: redis.Redis, entry: str) -> int:
    meta = client.hget(heartbeat_keys.beat_prefix() + entry, "meta")
    return int(json.loads(meta).get("total_run_count", 0)) if meta else 0


@pytest.mark.system
def test_an_idle_deployment_logs_no_sweep_at_info(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    runtime = make_runtime(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", redis_url, LIVE_SWEEP_EVERY_S="0.5")
    runtime.close()
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    with celery_worker(runtime.settings, worker_log, concurrency=1), celery_beat(runtime.settings, beat_log):
        entry = "disconnect-silent-pages-and-recover-calls"
        wait_for(lambda: _rounds(redis_client, entry) >= 6, timeout_s=60, message="beat to send six live sweeps")
        wait_for(lambda: redis_client.llen(queue.DEFAULT_QUEUE) == 0, timeout_s=30, message="the worker to take them")
    worker, beat = worker_log.read_text(errors="replace"), beat_log.read_text(errors="replace")
    assert "ready." in worker and "beat: Starting" in beat
    assert f"Task {SWEEP}[" not in worker, worker  # neither "received" nor "succeeded"
    assert "Sending due task" not in beat, beat
