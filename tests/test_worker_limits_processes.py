"""``allowed_concurrent`` and ``maximum_units_per_worker`` across two web processes serving one run: each
worker keeps several tabs open on both servers at once, asking, holding and submitting units, while a
sampler process reads the database about 100 times a second. No worker ever holds more units assigned
than ``allowed_concurrent``, nor more assigned or submitted than ``maximum_units_per_worker``; each
gets exactly that many, then is refused by either server with the reason."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from tests.conftest import wait_for
from tests.system import ROOT, celery_beat, celery_worker, child_env, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

ALLOWED, MAXIMUM = 2, 10
WORKERS, TABS = 8, 6


def ask(worker: str, ref: str) -> dict[str, object]:
    return {"provider_data": {"worker_name": worker, "assignment_id": ref, "agent_registration_id": f"{ref}-{worker}",
                              "provider_type": "mock"}}


async def crowd(urls: list[str], completed: Counter[str], reasons: set[str]) -> None:
    async def tab(worker: str, n: int, client: httpx.AsyncClient) -> None:
        attempt = 0
        deadline = time.monotonic() + 180  # a deadline for a stuck run, not a speed target
        while completed[worker] < MAXIMUM and time.monotonic() < deadline:
            attempt += 1
            url = urls[(n + attempt) % len(urls)]  # each tab alternates between the two servers
            data = (await client.post(url + "/request_agent", json=ask(worker, f"t{n}-{attempt}"))).json()["data"]
            if data["agent_id"] is None:
                reasons.add(str(data["failure_reason"]))
                await asyncio.sleep(0.01)
                continue
            await asyncio.sleep(0.2)  # the worker reads the page
            other = urls[(n + attempt + 1) % len(urls)]  # and submits through the other server
            done = await client.post(other + "/submit_task", json={"USED_AGENT_ID": data["agent_id"],
                                                                   "final_data": {"r": "1"}})
            assert done.status_code == 200, done.text
            completed[worker] += 1

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=WORKERS * TABS), timeout=30) as client:
        await asyncio.gather(*(tab(f"w{w}", n, client) for w in range(WORKERS) for n in range(TABS)))


def test_per_worker_limits_hold_with_tabs_on_two_web_processes(tmp_path: Path, database_url: str,
                                                               redis_url: str) -> None:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, POOL_RENEW_EVERY_S="0.1", RUN_SWEEP_EVERY_S="0.5")
    task_dir = write_task_dir(tmp_path, rows=100, architect="mock", extra_yaml=(
        f"    allowed_concurrent: {ALLOWED}\n    maximum_units_per_worker: {MAXIMUM}\n"))
    run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
    out = tmp_path / "samples.txt"
    completed: Counter[str] = Counter()
    reasons: set[str] = set()
    with celery_worker(rt.settings, tmp_path / "worker.log"), celery_beat(rt.settings, tmp_path / "beat.log"), \
            web_server(rt.settings, run_id, tmp_path / "web1.log") as first, \
            web_server(rt.settings, run_id, tmp_path / "web2.log") as second:
        enqueue_launch(rt, run_id)
        sampler = subprocess.Popen([sys.executable, "-m", "tests.worker_sampler", rt.settings.database_url,
                                    str(run_id), str(out)], cwd=ROOT, env=child_env(rt.settings))
        try:
            wait_for(lambda: out.exists() and out.stat().st_size > 0, message="the sampler to start")
            asyncio.run(crowd([first, second], completed, reasons))
            # Done with their quota, every worker is refused by both servers, with the reason.
            for worker in completed:
                for url in (first, second):
                    again = httpx.post(url + "/request_agent", json=ask(worker, "last")).json()["data"]
                    assert again["agent_id"] is None and "maximum number of units" in str(again["failure_reason"])
        finally:
            sampler.terminate()
            sampler.wait(10)
    rt.close()
    assert completed == Counter({f"w{w}": MAXIMUM for w in range(WORKERS)}), completed
    assert any("at once" in r for r in reasons), reasons  # allowed_concurrent did refuse tabs
    samples = [tuple(int(v) for v in line.split()[1:]) for line in out.read_text().splitlines()]
    most_assigned = max(s[0] for s in samples)
    most_taken = max(s[1] for s in samples)
    print(f"\n[{database_url.split(':')[0]}] {len(samples)} samples: most assigned to one worker "
          f"{most_assigned}/{ALLOWED}, most assigned or submitted {most_taken}/{MAXIMUM}")
    assert most_assigned <= ALLOWED
    assert most_taken <= MAXIMUM
    assert most_taken == MAXIMUM  # the sampler saw the quota reached
