"""A capped Prolific run against real processes (prolific-local, a Celery worker, beat, the web server),
sampled from prolific-local's side while simulated participants work two at a time: the study never shows
more active places (free, or held by a participant at work) than the cap, and never sits in ``AWAITING
REVIEW`` (or ``COMPLETED``) while a unit waits for a participant; a participant who times out on Prolific gets their unit
handed back by beat. Then a bonus is paid exactly once although the Celery worker paying it is SIGKILLed
after Prolific paid and before the ledger recorded it."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from sqlalchemy import func, select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, ProviderCall, Unit, UnitReview
from mephisto_dist.providers.requesters import register, save_keys
from mephisto_dist.queue import PROVIDER_CALL
from mephisto_dist.review.decisions import Decision, decide
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.prolific_local_process import FAKE_TOKEN, come_back, params_of, prolific_local
from tests.system import celery_beat, celery_worker, free_port, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system
AUTH = {"Authorization": f"Token {FAKE_TOKEN}"}
CAP = 2
UNITS = 5
AWAITING_GRACE_S = 3.0


class Sampler:
    """Reads the study's state at prolific-local and our waiting units, under the lock the participants
    hold around each step that changes both (taking a place and opening the task; submitting and coming
    back to Prolific), so a sample never falls between a participant's two halves of one step."""

    def __init__(self, prolific: str, study_id: str, runtime: Runtime, run_id: int) -> None:
        self.prolific, self.study_id, self.runtime, self.run_id = prolific, study_id, runtime, run_id
        self.lock = threading.Lock()
        self.max_active = 0
        self.samples = 0
        self.over_cap: list[dict[str, Any]] = []
        self.longest_awaiting_with_units_s = 0.0
        self._awaiting_since: float | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _waiting_units(self) -> int:
        with transaction(self.runtime.sessions) as session:
            return int(session.scalar(select(func.count()).select_from(Unit).where(
                Unit.task_run_id == self.run_id, Unit.status == "launched")) or 0)

    def sample(self) -> None:
        with self.lock:
            state = httpx.get(f"{self.prolific}/local/studies/{self.study_id}/state").json()
            waiting = self._waiting_units()
        at_work = sum(1 for s in state["submissions"] if s["status"] == "ACTIVE")
        free = max(0, state["total_available_places"] - state["places_taken"])
        self.max_active = max(self.max_active, free + at_work)
        if free + at_work > CAP:
            self.over_cap.append(state)
        now = time.monotonic()
        if state["status"] in ("AWAITING REVIEW", "COMPLETED") and waiting:
            self._awaiting_since = self._awaiting_since or now
            self.longest_awaiting_with_units_s = max(self.longest_awaiting_with_units_s, now - self._awaiting_since)
        else:
            self._awaiting_since = None
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.05)  # the sampling period; a stop ends it at once

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(10)


def take_place_and_unit(prolific: str, server: str, study_id: str, who: str, sampler: Sampler) -> dict[str, str]:
    """Take a place as soon as one is free, open the task and get a unit (one step for the sampler)."""
    def step() -> dict[str, str] | None:
        with sampler.lock:
            started = httpx.post(f"{prolific}/local/studies/{study_id}/start", json={"participant_id": who})
            if started.status_code != 200:
                return None
            opened = params_of(str(started.json()["url"]))
            agent = httpx.post(f"{server}/request_agent", json={"provider_data": {
                "worker_name": who, "assignment_id": opened["submission_id"],
                "agent_registration_id": f"{opened['submission_id']}-{who}", "prolific_study_id": study_id,
                "provider_type": "prolific"}}).json()["data"]
            assert agent["agent_id"], agent
            return {**opened, "agent_id": str(agent["agent_id"])}

    found: dict[str, str] = wait_for(step, timeout_s=90, interval_s=0.1, message=f"a place and a unit for {who}")
    return found


def submit_and_come_back(server: str, opened: dict[str, str], who: str, sampler: Sampler) -> None:
    with sampler.lock:
        sent = httpx.post(f"{server}/submit_task", json={"USED_AGENT_ID": opened["agent_id"],
                                                         "final_data": {"rating": "4"}})
        assert sent.status_code == 200, sent.text
        assert come_back(opened["complete_url"], who)["status"] == "AWAITING REVIEW"


def units(runtime: Runtime, run_id: int, status: str) -> int:
    with transaction(runtime.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Unit).where(
            Unit.task_run_id == run_id, Unit.status == status)) or 0)


def test_a_capped_study_and_a_bonus_paid_once_across_a_killed_worker(
        tmp_path: Path, redis_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROLIFIC_CREDENTIALS_FILE", str(tmp_path / "prolific" / "credentials"))
    with prolific_local(tmp_path / "prolific.sqlite3", tmp_path / "prolific.log", slow_pay_s=30) as prolific:
        runtime = make_runtime(tmp_path / "data", sqlite_url, redis_url, DEPLOYMENT="cap", RECONCILE_EVERY_S="1",
                               PROVIDER_CALL_STALE_S="12", PROVIDER_CALL_SWEEP_EVERY_S="1")
        save_keys("prolific", "lab", {"api_key": FAKE_TOKEN})
        with transaction(runtime.sessions) as session:
            register(session, "prolific", "lab", aws_profile="lab", endpoint_url=prolific, now=datetime.now(UTC))
        port = free_port()
        task_dir = write_task_dir(tmp_path, rows=UNITS, port=port, cap=CAP)
        run_id = create_run(runtime, prepare_run(task_dir, "example", [*(
            "mephisto/provider=prolific", "mephisto.provider.requester_name=lab")], check_port=False))
        logs = tmp_path / "logs"
        logs.mkdir()
        with celery_worker(runtime.settings, logs / "worker.log") as worker, \
                celery_beat(runtime.settings, logs / "beat.log"), \
                web_server(runtime.settings, run_id, logs / "web.log", port=port) as server:
            enqueue_launch(runtime, run_id)
            study = wait_for(lambda: next(iter(httpx.get(f"{prolific}/api/v1/studies/", headers=AUTH)
                                                .json()["results"]), None), timeout_s=60, message="the study")
            with Sampler(prolific, study["id"], runtime, run_id) as sampler:
                # One participant takes a unit and times out on Prolific: beat hands the unit back.
                late = take_place_and_unit(prolific, server, study["id"], "PLATE", sampler)
                with sampler.lock:
                    assert httpx.post(f"{prolific}/local/submissions/{late['submission_id']}/time-out").status_code \
                        == 200
                wait_for(lambda: units(runtime, run_id, "assigned") == 0, timeout_s=30,
                         message="beat to hand back the timed-out participant's unit")

                def work(names: list[str]) -> None:
                    for who in names:
                        opened = take_place_and_unit(prolific, server, study["id"], who, sampler)
                        time.sleep(0.3)  # at work
                        submit_and_come_back(server, opened, who, sampler)

                errors: list[BaseException] = []

                def guarded(names: list[str]) -> None:
                    try:
                        work(names)
                    except BaseException as error:  # noqa: BLE001 - reported by the main thread
                        errors.append(error)

                crowd = [threading.Thread(target=guarded, args=(names,)) for names in (["P1", "P3", "P5"], ["P2", "P4"])]
                for thread in crowd:
                    thread.start()
                for thread in crowd:
                    thread.join(240)
                assert not errors, errors
                wait_for(lambda: units(runtime, run_id, "completed") == UNITS, timeout_s=60, message="every unit done")
            assert not sampler.over_cap, sampler.over_cap[:3]
            assert sampler.samples >= 10 and sampler.max_active == CAP, (sampler.samples, sampler.max_active)
            assert sampler.longest_awaiting_with_units_s < AWAITING_GRACE_S, sampler.longest_awaiting_with_units_s
            with transaction(runtime.sessions) as session:
                returned = session.scalars(select(Agent.id).where(Agent.task_run_id == run_id,
                                                                  Agent.status == "returned")).all()
                assert len(returned) == 1  # the timed-out participant's
                paid_unit = session.scalars(select(Unit.id).where(Unit.task_run_id == run_id)
                                            .order_by(Unit.id)).first()
                assert paid_unit is not None

            # A bonus: the worker paying it is SIGKILLed once Prolific has paid, before the ledger records it.
            with transaction(runtime.sessions) as session:
                calls = decide(session, paid_unit, Decision.APPROVE, now=datetime.now(UTC), note="good",
                               bonus=1.5).call_ids
            for call_id in calls:
                runtime.queue.enqueue(PROVIDER_CALL, call_id)
            wait_for(lambda: stats(prolific)["BonusesPaid"] == 1, timeout_s=30, interval_s=0.05,
                     message="Prolific to pay the bonus")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
            bonus_call = _bonus_call(runtime)
            assert bonus_call.status == "claimed"  # the killed worker never recorded it
            with celery_worker(runtime.settings, logs / "worker2.log", name="second"):
                wait_for(lambda: _bonus_call(runtime).status == "done", timeout_s=60, interval_s=0.5,
                         message="beat's sweep to make the abandoned bonus call again")
            assert stats(prolific)["BonusesPaid"] == 1
            [payment] = stats(prolific)["BonusPayments"]
            assert payment["amount_cents"] == 150
            with transaction(runtime.sessions) as session:
                review = session.scalars(select(UnitReview).where(UnitReview.unit_id == paid_unit)).one()
                assert review.bonus_paid_at is not None
            assert _bonus_call(runtime).attempts == 2
        runtime.close()


def stats(prolific: str) -> dict[str, Any]:
    return dict(httpx.get(f"{prolific}/local/stats").json())


def _bonus_call(runtime: Runtime) -> ProviderCall:
    with transaction(runtime.sessions) as session:
        call = session.scalars(select(ProviderCall).where(ProviderCall.action == "bonus")).one()
        session.expunge(call)
        return call
