"""Bulk approval through the review app, end to end with real processes (issue 22): approving a run's
1,000 completed units answers at once with a review batch; a Celery worker works it through the outbox,
its page showing the progress; SIGKILLed mid-way (the whole worker, pool and all), the batch is finished
after a worker comes back (beat's outbox sweep sends the stale message again), and every unit is decided
once and paid once."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import ProviderCall, ReviewBatch, Unit, UnitReview
from mephisto_dist.runtime import Runtime
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.conftest import wait_for
from tests.factories import make_run, now
from tests.system import ROOT, celery_beat, celery_worker, child_env, free_port, make_runtime, stop

pytestmark = pytest.mark.system

UNITS = 1000
SETTINGS = {"OUTBOX_CLAIM_STALE_S": "20", "OUTBOX_SWEEP_EVERY_S": "1", "OUTBOX_RETRY_BASE_S": "1",
            "PROVIDER_CALL_STALE_S": "10", "PROVIDER_CALL_SWEEP_EVERY_S": "1", "PROVIDER_RETRY_BASE_S": "1",
            "BEAT_LOCK_TIMEOUT_S": "3", "HEARTBEAT_EVERY_S": "1"}


@pytest.fixture
def rt(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path / "data", pg_url, redis_url, **SETTINGS)
    yield runtime
    runtime.close()


def completed_run(rt: Runtime) -> int:
    run = make_run(rt.sessions, assignments=UNITS, task_name="bulk")
    for start in range(0, UNITS, 100):
        with transaction(rt.sessions) as session:
            for index in range(start, start + 100):
                reg = Registration.from_request({"provider_data": {"worker_name": f"w{index % 40}",
                                                                   "assignment_id": f"a{index}"}})
                details = claims.register_agent(session, run, reg, now=now())
                assert details.agent_id
                claims.submit_task(session, run, details.agent_id, {"n": index}, now=now())
    return run.run_id


def position(rt: Runtime, batch_id: int) -> tuple[int, bool]:
    with transaction(rt.sessions) as session:
        batch = session.get(ReviewBatch, batch_id)
        assert batch is not None
        return batch.position, batch.finished_at is not None


def test_a_thousand_approvals_are_a_batch_that_survives_a_sigkilled_worker(rt: Runtime, tmp_path: Path) -> None:
    run_id = completed_run(rt)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**child_env(rt.settings), "MEPHISTO_DIST_REVIEW_USERS": "ada:correct-horse",
           "MEPHISTO_DIST_REVIEW_SECRET": "s" * 40}
    with (tmp_path / "app.log").open("ab") as log:
        app = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", "review-app", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _answers(url), 30, message="the review app to answer")
        with celery_beat(rt.settings, tmp_path / "beat.log"), httpx.Client(base_url=url, timeout=10) as client:
            client.post("/login", data={"reviewer": "ada", "password": "correct-horse"})
            preview = client.get(f"/runs/{run_id}/approve")
            assert f"Approve the run's {UNITS} completed unit(s)" in html.unescape(preview.text)
            csrf = re.search(r'name="csrf" value="([^"]+)"', preview.text)
            assert csrf is not None
            asked = time.monotonic()
            answer = client.post(f"/runs/{run_id}/approve", data={"csrf": csrf.group(1)}, follow_redirects=False)
            took_s = time.monotonic() - asked
            assert answer.status_code == 303, answer.text
            assert took_s < 5, took_s  # recorded and sent, not worked, in the request
            batch_id = int(answer.headers["location"].rsplit("/", 1)[-1])
            assert "waiting for a Celery worker: 0 of 1000 unit(s) worked" in _shown(client.get(f"/batches/{batch_id}"))

            with celery_worker(rt.settings, tmp_path / "worker.log", concurrency=1, name="first") as worker:
                wait_for(lambda: position(rt, batch_id)[0] > 0, 60, interval_s=0.01,
                         message="the worker to start the batch")
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
            killed_at, finished = position(rt, batch_id)
            assert 0 < killed_at < UNITS and not finished, killed_at
            live = _shown(client.get(f"/batches/{batch_id}/live"))
            assert f"working: {killed_at} of 1000 unit(s) worked" in live, live

            with celery_worker(rt.settings, tmp_path / "worker.log", concurrency=2, name="second"):
                wait_for(lambda: position(rt, batch_id)[1], 120, interval_s=0.2,
                         message="the batch to be finished after the restart")
                wait_for(lambda: _unpaid(rt) == 0, 120, interval_s=0.2, message="every approval to be paid")
            live = _shown(client.get(f"/batches/{batch_id}/live"))
            assert "finished: 1000 of 1000 unit(s) worked, 1000 approved; by app:ada" in live, live
    finally:
        stop(app)

    with transaction(rt.sessions) as session:
        assert dict(session.execute(select(Unit.status, func.count()).where(Unit.task_run_id == run_id)
                                    .group_by(Unit.status)).all()) == {"accepted": UNITS}
        # Decided once: one review per unit; paid once: one approval per unit in the ledger, each made.
        assert session.scalar(select(func.count(func.distinct(UnitReview.unit_id)))) == UNITS
        assert session.scalar(select(func.count()).select_from(UnitReview)) == UNITS
        approvals = session.execute(select(ProviderCall.unit_id, ProviderCall.status)
                                    .where(ProviderCall.action == "approve")).all()
        assert len(approvals) == UNITS and len({unit for unit, _ in approvals}) == UNITS
        assert {status for _, status in approvals} == {"done"}
        assert set(session.scalars(select(UnitReview.decided_by))) == {"app:ada"}
        batch = session.get(ReviewBatch, batch_id)
        assert batch is not None and (batch.decided, batch.skipped) == (UNITS, 0)


def _shown(page: httpx.Response) -> str:
    """The page's text, as a reader sees it (no tags, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.text))


def _unpaid(rt: Runtime) -> int:
    with transaction(rt.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(ProviderCall)
                                  .where(ProviderCall.status != "done")) or 0)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/login", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
