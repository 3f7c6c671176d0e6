"""``resume`` right after SIGKILL of everything: the web, Celery worker and beat processes of an attached
run and the ``run`` process itself are killed at once while simulated workers are claiming and submitting
and approvals are being paid; ``mephisto-dist resume`` then finishes the run. Every unit is completed
exactly once, an agent that held a unit through the crash submits it, a server-side sampler never sees
more than the cap ``launched + assigned``, and no approval is paid twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import wait_for
from tests.system import ROOT
from tests.test_lifecycle_system import AttachedRun, _external_env, cli

pytestmark = pytest.mark.system

CAP, ROWS = 3, 30
READ_S = 1.0  # how long a simulated worker reads a page: with the cap, about 3 units a second


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, deepest first."""
    listed = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in listed.splitlines():
        child, parent = (int(part) for part in line.split())
        children.setdefault(parent, []).append(child)
    found: list[int] = []

    def walk(p: int) -> None:
        for child in children.get(p, []):
            walk(child)
            found.append(child)

    walk(pid)
    return found


def kill_everything(run: AttachedRun) -> list[int]:
    """SIGKILL the run's processes one by one (its children and their pools first, so none is sent the
    parent-death SIGTERM and shuts down gracefully), then the ``run`` process."""
    pids = descendants(run.process.pid)
    for pid in [*pids, run.process.pid]:
        os.kill(pid, signal.SIGKILL)
    run.process.wait(10)
    return pids


class Crowd:
    """Simulated workers over HTTP, one after another on a few threads, through the crash: a worker asks
    for a unit with its own registration id until it is answered (a crashed server's answer may be lost,
    and the same id reconnects to the same agent), then submits until the submission is accepted."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.next = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.submitted: list[str] = []
        self.refused_submits: list[str] = []
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _post(self, path: str, body: dict[str, object]) -> httpx.Response | None:
        try:
            return httpx.post(self.url + path, json=body, timeout=10)
        except httpx.HTTPError:
            time.sleep(0.2)  # the server is down: the worker waits and tries again
            return None

    def _work(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.next += 1
                worker = f"crowd{self.next}"
            agent_id = None
            while agent_id is None and not self.stop.is_set():
                answer = self._post("/request_agent", {"provider_data": {
                    "worker_name": worker, "assignment_id": "a", "agent_registration_id": f"a-{worker}",
                    "provider_type": "mock"}})
                if answer is not None and answer.status_code == 200:
                    agent_id = answer.json()["data"]["agent_id"]
                if agent_id is None:
                    time.sleep(0.05)
            time.sleep(READ_S)  # the worker reads the page
            while agent_id is not None and not self.stop.is_set():
                done = self._post("/submit_task", {"USED_AGENT_ID": agent_id, "final_data": {"r": worker}})
                if done is None or done.status_code >= 500:
                    continue
                (self.submitted if done.status_code == 200 else self.refused_submits).append(
                    f"{agent_id}: {done.status_code} {done.text}")
                break


def rows(run: AttachedRun, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(f"sqlite:///{run.data_dir / 'mephisto-dist.db'}")
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query)).all()]
    finally:
        engine.dispose()


def test_resume_right_after_sigkill_of_everything_finishes_every_unit_exactly_once(
        tmp_path: Path, redis_url: str) -> None:
    env = _external_env(tmp_path, redis_url, MEPHISTO_DIST_BEAT_LOCK_TIMEOUT_S="3",
                        MEPHISTO_DIST_LEASE_TTL_S="10")
    run = AttachedRun(tmp_path, f"mephisto.task.max_num_concurrent_units={CAP}", rows=ROWS, env=env)
    samples = tmp_path / "samples.txt"
    sampler: subprocess.Popen[bytes] | None = None
    crowd = Crowd(run.url)
    resumed: AttachedRun | None = None
    try:
        run.wait_for_output(r"Open the task as a worker")
        sampler = subprocess.Popen([sys.executable, "-m", "tests.sampler", env["MEPHISTO_DIST_DATABASE_URL"],
                                    redis_url, "1", str(samples)], cwd=ROOT, env=run.env)
        wait_for(lambda: samples.exists() and samples.stat().st_size > 0, message="the sampler to start")
        held = run.register("held")  # holds its unit through the crash, submits after the resume
        assert held["agent_id"], held
        crowd.start()
        wait_for(lambda: len(crowd.submitted) >= 4, timeout_s=60, message="4 submissions")
        approved = cli(run, "review", "approve", "--all-completed", "--run", "1")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        killed = kill_everything(run)  # mid-run: the crowd keeps asking and submitting
        assert len(killed) >= 3, killed
        before = dict(rows(run, "select status, count(*) from unit group by status"))
        resumed = AttachedRun(tmp_path, "1", command="resume", env=env)
        resumed.port, resumed.url, resumed.data_dir = run.port, run.url, run.data_dir
        resumed.wait_for_output(r"Open the task as a worker")
        wait_for(lambda: len(crowd.submitted) + 1 >= ROWS, timeout_s=120, message="the crowd to finish")
        # The held unit keeps the run open while every other unit is approved and paid: the approvals
        # queued before the crash, sent again, and the rest.
        for args in (("resend", "--run", "1"), ("approve", "--all-completed", "--run", "1")):
            decided = cli(resumed, "review", *args)
            assert decided.returncode == 0, decided.stdout + decided.stderr
        wait_for(lambda: not rows(run, "select id from provider_call where status = 'pending'"), timeout_s=60,
                 message="every approval to be carried out")
        assert resumed.submit(held["agent_id"]).status_code == 200
        assert resumed.wait(120) == 0, resumed.text()
        crowd.join()
    finally:
        crowd.stop.set()
        run.kill()
        if resumed is not None:
            resumed.kill()
        if sampler is not None:
            sampler.terminate()
            sampler.wait(10)
    assert crowd.refused_submits == [], crowd.refused_submits  # no worker's held unit was lost
    assert before.get("completed", 0) + before.get("accepted", 0) <= ROWS - 5, before  # killed mid-run
    units = rows(run, "select id, status from unit")
    statuses = sorted(status for _, status in units)
    assert statuses == ["accepted"] * (ROWS - 1) + ["completed"], units  # the held unit is not approved
    # Exactly one submitted agent per unit: nothing done twice, nothing lost.
    per_unit = rows(run, "select unit_id, count(*) from agent where status in ('completed', 'approved') "
                         "group by unit_id")
    assert sorted(u for u, _ in per_unit) == sorted(u for u, _ in units) and {n for _, n in per_unit} == {1}
    assert len(crowd.submitted) + 1 == ROWS, crowd.submitted
    # One approval per unit in the ledger, none made twice.
    calls = rows(run, "select unit_id, count(*), max(attempts), min(status) from provider_call "
                      "where action = 'approve' group by unit_id")
    accepted = sorted(u for u, status in units if status == "accepted")
    assert sorted(u for u, _, _, _ in calls) == accepted
    assert {(n, attempts) for _, n, attempts, _ in calls} == {(1, 1)}, calls
    in_flight = sum(status == "claimed" for _, _, _, status in calls)
    seen = [line.split() for line in samples.read_text().splitlines()]
    assert len(seen) > 100
    most = max(int(active) for _, active, _ in seen)
    print(f"\n[sqlite, resume after SIGKILL of all] {len(seen)} samples: max launched+assigned {most}/{CAP}; "
          f"{len(calls) - in_flight} approvals paid once, {in_flight} killed mid-call (left claimed); "
          f"units when killed: {before}")
    assert most <= CAP, most
