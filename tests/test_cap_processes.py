"""The global cap with several launching processes: two web servers, a Celery worker (launch tasks
sent all the time) and beat (sweeps and pool repairs every half second) launch and refill one run at
once while simulated workers claim and submit over HTTP. A sampler in the test process reads the run's
``launched + assigned`` count from the database, and the pool from Redis, about 100 times a second;
neither may ever exceed the cap in force, also while the cap is lowered live and across Redis flushes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, select

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import TaskRun, Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.queue import LAUNCH_UNITS
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import ROOT, celery_beat, celery_worker, child_env, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

CAP, LOWERED_CAP = 5, 3
UNITS = 150
WORKERS_PER_SERVER = 20
ACTIVE = (UnitStatus.LAUNCHED.value, UnitStatus.ASSIGNED.value)


@dataclass
class Sample:
    at: float
    active: int
    held: int


@contextmanager
def sampler(rt: Runtime, run_id: int, out: Path) -> Iterator[list[Sample]]:
    """The sampler process (``tests.sampler``) for the block; its samples once the block ends."""
    process = subprocess.Popen([sys.executable, "-m", "tests.sampler", rt.settings.database_url,
                                rt.settings.effective_redis_url, str(run_id), str(out)],
                               cwd=ROOT, env=child_env(rt.settings))
    samples: list[Sample] = []
    try:
        wait_for(lambda: out.exists() and out.stat().st_size > 0, message="the sampler to start")
        yield samples
    finally:
        process.terminate()
        process.wait(10)
    for line in out.read_text().splitlines():
        at, active, held = line.split()
        samples.append(Sample(float(at), int(active), int(held)))


def rate_hz(samples: list[Sample]) -> float:
    span = samples[-1].at - samples[0].at
    return len(samples) / span if span > 0 else 0.0


def provider_data(worker: str, ref: str) -> dict[str, object]:
    return {"provider_data": {"worker_name": worker, "assignment_id": ref,
                              "agent_registration_id": f"{ref}-{worker}", "provider_type": "mock"}}


async def simulated_workers(urls: list[str], run_done: threading.Event, submitted: list[int]) -> None:
    """Workers over HTTP, each on one server: ask for a unit, read it a moment, submit, again."""

    async def worker(n: int, client: httpx.AsyncClient) -> None:
        url = urls[n % len(urls)]
        attempt = 0
        while not run_done.is_set():
            attempt += 1
            response = await client.post(url + "/request_agent", json=provider_data(f"w{n}", f"a{n}-{attempt}"))
            data = response.json()["data"]
            if data["agent_id"] is None:
                await asyncio.sleep(0.01)
                continue
            await asyncio.sleep(0.02)
            done = await client.post(url + "/submit_task", json={"USED_AGENT_ID": data["agent_id"],
                                                                 "final_data": {"rating": "3"}})
            assert done.status_code == 200, done.text
            submitted.append(1)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=30) as client:
        await asyncio.gather(*(worker(n, client) for n in range(WORKERS_PER_SERVER * len(urls))))


def launch_pressure(rt: Runtime, run_id: int, stop: threading.Event) -> None:
    """Keep the Celery workers launching the run too, racing the web servers' refills."""
    while not stop.wait(0.05):
        rt.queue.enqueue(LAUNCH_UNITS, run_id)


def completed_count(rt: Runtime, run_id: int) -> int:
    with read_transaction(rt.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Unit).where(
            Unit.task_run_id == run_id, Unit.status == UnitStatus.COMPLETED.value)) or 0)


def run_is_complete(rt: Runtime, run_id: int) -> bool:
    with read_transaction(rt.sessions) as session:
        run = session.get(TaskRun, run_id)
        return bool(run and run.is_completed)


@pytest.fixture
def deployment(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, POOL_RENEW_EVERY_S="0.5",
                      RUN_SWEEP_EVERY_S="0.5", LEASE_TTL_S="10")
    yield rt
    rt.close()


@pytest.mark.parametrize("provider", ["instant", "remote"])
def test_the_cap_holds_with_web_and_celery_launching_across_cap_changes_and_redis_flushes(
        tmp_path: Path, deployment: Runtime, redis_url: str, provider: str) -> None:
    rt = deployment
    publish_log = tmp_path / "published.log"
    # "remote": publishing takes a while and freed slots are refilled by Celery launch tasks, as on MTurk.
    overrides = [f"mephisto.provider.publish_log={publish_log}"]
    if provider == "remote":
        overrides.append("mephisto.provider.publish_latency_s=0.01")
    task_dir = write_task_dir(tmp_path, rows=UNITS, architect="mock", cap=CAP)
    run_id = create_run(rt, prepare_run(task_dir, "example", overrides, check_port=False))
    flusher = redis.Redis.from_url(redis_url)
    run_done = threading.Event()
    submitted: list[int] = []
    lowered_at: float | None = None
    with celery_worker(rt.settings, tmp_path / "worker.log"), celery_beat(rt.settings, tmp_path / "beat.log"), \
            web_server(rt.settings, run_id, tmp_path / "web1.log") as first, \
            web_server(rt.settings, run_id, tmp_path / "web2.log") as second, \
            sampler(rt, run_id, tmp_path / "samples.txt") as samples:
        enqueue_launch(rt, run_id)
        pressure = threading.Thread(target=launch_pressure, args=(rt, run_id, run_done), daemon=True)
        pressure.start()
        clients = threading.Thread(target=lambda: asyncio.run(simulated_workers([first, second], run_done,
                                                                                submitted)), daemon=True)
        clients.start()
        try:
            # Flush Redis three times (pools, the cap override and queued tasks are lost), and lower
            # the cap live between the first and the second.
            for threshold in (20, 50, 80):
                wait_for(lambda t=threshold: len(submitted) >= t, timeout_s=120,
                         message=f"{threshold} submissions")
                flusher.flushall()
                if lowered_at is None:
                    wait_for(lambda: len(submitted) >= 35, timeout_s=120, message="35 submissions")
                    subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "limits", str(run_id),
                                    "--max-concurrent", str(LOWERED_CAP)], cwd=ROOT, env=child_env(rt.settings),
                                   check=True, capture_output=True)
                    lowered_at = time.monotonic()
            wait_for(lambda: run_is_complete(rt, run_id), timeout_s=180, message="the run to complete")
        finally:
            run_done.set()
            clients.join(30)
            pressure.join(5)
            flusher.close()
    assert completed_count(rt, run_id) == UNITS
    assert samples
    before = [s for s in samples if lowered_at is None or s.at < lowered_at]
    after = [s for s in samples if lowered_at is not None and s.at >= lowered_at]
    assert max(s.active for s in before) <= CAP, max(s.active for s in before)
    assert max(s.held for s in before) <= CAP, max(s.held for s in before)
    # Lowering a cap takes nothing away: the units out drain, and from then on the new cap holds.
    drained = next(i for i, s in enumerate(after) if s.active <= LOWERED_CAP and s.held <= LOWERED_CAP)
    assert max(s.active for s in after) <= CAP
    assert max(s.active for s in after[drained:]) <= LOWERED_CAP, max(s.active for s in after[drained:])
    assert max(s.held for s in after[drained:]) <= LOWERED_CAP, max(s.held for s in after[drained:])
    print(f"\n[{rt.engine.dialect.name}/{provider}] {len(samples)} samples at "
          f"{rate_hz(samples):.0f} Hz: max active {max(s.active for s in before)}/{CAP} before the change, "
          f"{max(s.active for s in after[drained:])}/{LOWERED_CAP} after; "
          f"max pool {max(s.held for s in before)}/{CAP}, {max(s.held for s in after[drained:])}/{LOWERED_CAP}")
    # Never a second publication for one launch, and one launch per unit.
    launches: dict[int, set[str]] = defaultdict(set)
    for line in publish_log.read_text().splitlines():
        unit_id, launch_id = line.split()
        launches[int(unit_id)].add(launch_id)
    with read_transaction(rt.sessions) as session:
        recorded = {unit_id: launch_id for unit_id, launch_id in session.execute(
            select(Unit.id, Unit.launch_id).where(Unit.task_run_id == run_id))}
    assert {u: {launch} for u, launch in recorded.items()} == dict(launches)
