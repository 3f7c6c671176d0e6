"""The launch path with real processes: a sender killed between the provider call and its record is
repaired by beat with the same launch id (one publication per launch, no unit left half-launched), and
a provider that always fails is tried exactly the configured number of times, then the unit is marked
failed with the provider's message, shown by ``status``, and sent again only by ``review resend``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.providers.mock import PUBLISH_REFUSED
from mephisto_dist.runs.launches import run_pool
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import ROOT, celery_beat, celery_worker, child_env, make_runtime
from tests.taskdirs import write_task_dir


def published(log: Path) -> dict[int, list[str]]:
    """unit id -> the launch ids of every publish call made for it, in order."""
    calls: dict[int, list[str]] = defaultdict(list)
    if log.exists():
        for line in log.read_text().splitlines():
            unit_id, launch_id = line.split()
            calls[int(unit_id)].append(launch_id)
    return calls


def units(rt: Runtime, run_id: int) -> list[Unit]:
    with read_transaction(rt.sessions) as session:
        return list(session.scalars(select(Unit).where(Unit.task_run_id == run_id).order_by(Unit.id)))


def cli(rt: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT,
                          env=child_env(rt.settings), capture_output=True, text=True, check=False)


@pytest.mark.system
def test_a_sender_killed_mid_call_is_repaired_by_beat_with_the_same_launch(
        tmp_path: Path, database_url: str, redis_url: str) -> None:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, LEASE_TTL_S="4", RUN_SWEEP_EVERY_S="0.5",
                      POOL_RENEW_EVERY_S="0.5")
    log = tmp_path / "published.log"
    task_dir = write_task_dir(tmp_path, rows=4, architect="mock", cap=2)
    run_id = create_run(rt, prepare_run(task_dir, "example", [
        f"mephisto.provider.publish_log={log}", "mephisto.provider.publish_latency_s=1"], check_port=False))
    with celery_worker(rt.settings, tmp_path / "worker1.log", concurrency=1) as doomed:
        enqueue_launch(rt, run_id)
        # The first publish call was made; its answer is in transit when the sender dies.
        wait_for(lambda: published(log), timeout_s=30, message="the first publish call")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    intents = [u for u in units(rt, run_id) if u.launch_id]
    assert len(intents) == 2 and all(u.status == "created" for u in intents), [(u.status, u.launch_id) for u in intents]
    with celery_worker(rt.settings, tmp_path / "worker2.log"), celery_beat(rt.settings, tmp_path / "beat.log"):
        wait_for(lambda: sum(u.status == "launched" for u in units(rt, run_id)) == 2, timeout_s=60,
                 message="beat to re-send both launches")
    final = units(rt, run_id)
    calls = published(log)
    launched = [u for u in final if u.status == "launched"]
    # The same two launches, each re-sent with its own id: one publication per launch, as a provider
    # deduplicating by token sees it; the other two units wait for a slot, untouched.
    assert sorted(u.id for u in launched) == sorted(u.id for u in intents)
    for unit in launched:
        assert unit.launch_id == next(i.launch_id for i in intents if i.id == unit.id)
        assert set(calls[unit.id]) == {unit.launch_id}, calls
        assert unit.provider_unit_id == f"mock-{unit.launch_id}"
    assert len(calls[intents[0].id]) == 2  # the call whose answer was lost, and its re-send
    assert all(u.launch_id is None and u.status == "created" for u in final if u not in launched)
    rt.close()


@pytest.mark.system
def test_a_provider_that_always_fails_gets_exactly_the_configured_attempts(
        tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url, PROVIDER_MAX_ATTEMPTS="3",
                      PROVIDER_RETRY_BASE_S="0.2", RUN_SWEEP_EVERY_S="0.5", POOL_RENEW_EVERY_S="0.5")
    log = tmp_path / "published.log"
    task_dir = write_task_dir(tmp_path, rows=2, architect="mock", cap=1)
    run_id = create_run(rt, prepare_run(task_dir, "example", [
        f"mephisto.provider.publish_log={log}", "mephisto.provider.fault=publish"], check_port=False))

    def all_failed() -> bool:
        return all(u.launch_failed_at is not None for u in units(rt, run_id))

    with celery_worker(rt.settings, tmp_path / "worker.log"), celery_beat(rt.settings, tmp_path / "beat.log"):
        enqueue_launch(rt, run_id)
        wait_for(all_failed, timeout_s=60, message="both launches to fail for good")
        first = units(rt, run_id)
        assert [len(v) for v in published(log).values()] == [3, 3]
        assert all(u.launch_attempts == 3 and u.launch_error == PUBLISH_REFUSED and u.launch_id is None
                   for u in first)
        shown = cli(rt, "status", str(run_id))
        assert shown.returncode == 0, shown.stderr
        assert "launch failed for 2 unit(s)" in shown.stdout and PUBLISH_REFUSED in shown.stdout, shown.stdout
        # The interactive review shows each failed launch with the provider's message, and the resend.
        reviewed = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "review", "--run", str(run_id)],
                                  cwd=ROOT, env={**child_env(rt.settings), "COLUMNS": "250"}, input="",
                                  capture_output=True, text=True, check=False)
        assert reviewed.returncode == 0, reviewed.stderr
        assert "2 unit launch(es) and 0 provider call(s) failed every attempt" in reviewed.stdout, reviewed.stdout
        for unit in first:
            assert f"launch of unit {unit.id} (run {run_id}), 3 attempt(s): {PUBLISH_REFUSED}" in reviewed.stdout
        assert f"send them again: mephisto-dist review resend --run {run_id}" in reviewed.stdout
        # Beat sends nothing more on its own (the count below would overshoot); the researcher does.
        assert sum(len(v) for v in published(log).values()) == 6
        resent = cli(rt, "review", "resend", "--run", str(run_id))
        assert resent.returncode == 0 and "2 failed unit launch(es) sent again" in resent.stdout, resent
        wait_for(lambda: sum(len(v) for v in published(log).values()) == 12 and all_failed(), timeout_s=60,
                 message="the re-sent launches to fail again, three attempts each")
    # The unit held the slot (cap 1) while it was being retried, and gave it back when it gave up.
    assert rt.limiter.held(run_pool(run_id)) == 0
    rt.close()
