"""A run on ``mturk_sandbox`` end to end against a real mturk-local process: HITs made by the Celery
worker through boto3, simulated workers accepting them at mturk-local and doing the task over HTTP at our
web server with MTurk's URL parameters, review and pay through the ledger's Celery tasks, and nothing
made twice when a launch or a bonus is repeated (counted at mturk-local)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, ProviderCall, Unit
from mephisto_dist.providers import UnitLaunch, make_provider
from mephisto_dist.providers.mturk import credentials
from mephisto_dist.providers.requesters import register
from mephisto_dist.queue import PROVIDER_CALL
from mephisto_dist.review.decisions import Decision, decide, perform_call
from mephisto_dist.review.qualifications import (
    create_qualification,
    find_worker,
    grant,
    pending_worker_calls,
    record_notification,
    revoke,
)
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runs.returns import hand_back_returned_units
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.mturk_local_process import client, mturk_local
from tests.system import celery_worker, free_port, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

KEY_ID = "AKIDENDTOENDTEST0001"
SECRET = "e2e-secret-that-must-never-leak-9876543210"


@pytest.fixture()
def aws_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws" / "config"))
    return tmp_path / "aws"


def our_hits(mturk: Any) -> list[dict[str, Any]]:
    return [h for page in mturk.get_paginator("list_hits").paginate() for h in page["HITs"]
            if (h.get("RequesterAnnotation") or "").startswith("mephisto-dist ")]


class SimulatedWorker:
    """A worker at mturk-local who does the task over HTTP at the URL MTurk opens."""

    def __init__(self, turk: str, worker_id: str) -> None:
        self.turk, self.worker_id = turk, worker_id

    def accept(self, hit_id: str | None = None) -> dict[str, str]:
        if hit_id is None:
            hits = httpx.get(f"{self.turk}/api/hits", params={"workerId": self.worker_id}).json()["HITs"]
            hit_id = hits[0]["HITId"]
        view = httpx.post(f"{self.turk}/api/hits/{hit_id}/accept", json={"workerId": self.worker_id})
        assert view.status_code == 200, view.text
        url = view.json()["url"]
        params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        return {"url": url, **params}

    def start(self, server: str, opened: dict[str, str]) -> str:
        answer = httpx.post(f"{server}/request_agent", json={"provider_data": {
            "worker_name": opened["workerId"], "assignment_id": opened["assignmentId"], "hit_id": opened["hitId"],
            "agent_registration_id": f"{opened['assignmentId']}-{opened['workerId']}",
            "provider_type": "mturk_sandbox"}}).json()["data"]
        assert answer["agent_id"], answer
        return str(answer["agent_id"])

    def finish(self, server: str, opened: dict[str, str], agent_id: str) -> None:
        done = httpx.post(f"{server}/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": {"rating": "5"}})
        assert done.status_code == 200, done.text
        turk = httpx.post(opened["turkSubmitTo"] + "/mturk/externalSubmit",
                          data={"assignmentId": opened["assignmentId"]}, headers={"accept": "application/json"})
        assert turk.status_code == 200, turk.text


def statuses(runtime: Runtime, run_id: int) -> dict[int, tuple[str, str | None]]:
    with transaction(runtime.sessions) as session:
        return {u: (s, h) for u, s, h in session.execute(
            select(Unit.id, Unit.status, Unit.provider_unit_id).where(Unit.task_run_id == run_id))}


def assignment_of(runtime: Runtime, unit_id: int) -> str:
    with transaction(runtime.sessions) as session:
        data = session.scalar(select(Agent.provider_data).join(Unit, Unit.agent_id == Agent.id)
                              .where(Unit.id == unit_id))
    return str((data or {})["assignment_id"])


def lab_runtime(tmp_path: Path, sqlite_url: str, redis_url: str, turk: str) -> Runtime:
    """A runtime whose requester ``lab`` (an AWS profile) reaches the mturk-local at ``turk``."""
    runtime = make_runtime(tmp_path / "data", sqlite_url, redis_url, DEPLOYMENT="e2e")
    credentials.save_profile("lab", KEY_ID, SECRET)
    with transaction(runtime.sessions) as session:
        register(session, "mturk_sandbox", "lab", aws_profile="lab", endpoint_url=turk, now=datetime.now(UTC))
    return runtime


def holders(mturk: Any, name: str, status: str = "Granted") -> list[tuple[str, int]]:
    """The workers holding our qualification ``name`` on MTurk, with their values."""
    types = [t["QualificationTypeId"] for t in mturk.list_qualification_types(
        Query=name, MustBeRequestable=False, MustBeOwnedByCaller=True)["QualificationTypes"] if t["Name"] == name]
    if not types:
        return []
    found = mturk.list_workers_with_qualification_type(QualificationTypeId=types[0], Status=status)
    return [(q["WorkerId"], q["IntegerValue"]) for q in found["Qualifications"]]


def test_a_sandbox_run_on_mturk_local(tmp_path: Path, redis_url: str, sqlite_url: str, aws_home: Path) -> None:
    with mturk_local(tmp_path / "turk.sqlite3", tmp_path / "turk.log") as turk:
        mturk = client(turk)
        runtime = lab_runtime(tmp_path, sqlite_url, redis_url, turk)
        port = free_port()
        task_dir = write_task_dir(tmp_path, rows=5, port=port)
        run_id = create_run(runtime, prepare_run(task_dir, "example", [
            "mephisto/provider=mturk_sandbox", "mephisto.provider.requester_name=lab"], check_port=False))
        logs = tmp_path / "logs"
        logs.mkdir()
        with celery_worker(runtime.settings, logs / "worker.log"), \
                web_server(runtime.settings, run_id, logs / "web.log", port=port) as server:
            enqueue_launch(runtime, run_id)
            hits = wait_for(lambda: len(our_hits(mturk)) == 5 and our_hits(mturk), timeout_s=60, message="5 HITs")
            assert {h["HITStatus"] for h in hits} == {"Assignable"}
            assert all(h["RequesterAnnotation"].startswith(f"mephisto-dist deployment=e2e run={run_id} ")
                       for h in hits)
            assert hits[0]["Title"] == "Test task" and hits[0]["Reward"] == "0.25"
            launched = wait_for(lambda: all(s == "launched" for s, _ in statuses(runtime, run_id).values())
                                and statuses(runtime, run_id), message="units launched")
            assert {h for _, h in launched.values()} == {h["HITId"] for h in hits}

            # A launch repeated for the same units (a re-delivered task, or a crash after MTurk made the
            # HITs) finds the HITs their tokens made.
            provider = make_provider("mturk_sandbox", _provider_args(runtime, run_id))
            with transaction(runtime.sessions) as session:
                launch_ids = {u: str(launch) for u, launch in session.execute(
                    select(Unit.id, Unit.launch_id).where(Unit.task_run_id == run_id))}
            again = {unit_id: provider.publish_unit(UnitLaunch(run_id, unit_id, launch_ids[unit_id]),
                                                    f"http://localhost:{port}",
                                                    {"task_title": "Test task", "task_description": "A test task",
                                                     "task_reward": 0.25, "task_tags": "test"})
                     for unit_id in sorted(launched)}
            assert again == {u: h for u, (_, h) in launched.items()}
            assert httpx.get(f"{turk}/api/stats").json()["Rows"]["hit"] == 5

            # Three workers do the task; a fourth takes a HIT and returns it, and a fifth gets its unit.
            workers = [SimulatedWorker(turk, f"A1SIM{i}") for i in range(3)]
            for worker in workers:
                opened = worker.accept()
                assert opened["url"].startswith(f"http://localhost:{port}/?")
                worker.finish(server, opened, worker.start(server, opened))
            quitter, follower = SimulatedWorker(turk, "A1QUIT"), SimulatedWorker(turk, "A1NEXT")
            opened = quitter.accept()
            quitter.start(server, opened)
            assert httpx.post(f"{turk}/api/assignments/{opened['assignmentId']}/return",
                              json={"workerId": "A1QUIT"}).status_code == 200
            second = follower.accept(opened["hitId"])
            follower.finish(server, second, follower.start(server, second))
            # A worker returns a HIT and nobody takes it: beat's sweep asks MTurk and hands the unit back.
            gone = SimulatedWorker(turk, "A1GONE")
            left = gone.accept()
            gone.start(server, left)
            httpx.post(f"{turk}/api/assignments/{left['assignmentId']}/return", json={"workerId": "A1GONE"})
            assert hand_back_returned_units(runtime.sessions, provider, runtime.limiter, run_id,
                                            now=datetime.now(UTC), min_held_s=0) == 1
            assert [s for s, h in statuses(runtime, run_id).values() if h == left["hitId"]] == ["launched"]
            later = SimulatedWorker(turk, "A1LATER")
            again_opened = later.accept(left["hitId"])
            later.finish(server, again_opened, later.start(server, again_opened))
            done = wait_for(lambda: all(s == "completed" for s, _ in statuses(runtime, run_id).values())
                            and statuses(runtime, run_id), message="every unit completed")
            for hit in our_hits(mturk):
                assert hit["HITStatus"] == "Reviewable" and hit["NumberOfAssignmentsCompleted"] == 1

            # Review and pay through the ledger's Celery tasks.
            first, second_unit, third, fourth = sorted(done)[:4]
            now = datetime.now(UTC)
            with transaction(runtime.sessions) as session:
                calls = [*decide(session, first, Decision.APPROVE, now=now, note="thorough", bonus=1.5).call_ids,
                         *decide(session, second_unit, Decision.REJECT, now=now, note="did not read").call_ids,
                         *decide(session, third, Decision.SOFT_REJECT, now=now).call_ids,
                         *decide(session, fourth, Decision.APPROVE, now=now).call_ids]
            for call_id in calls:
                runtime.queue.enqueue(PROVIDER_CALL, call_id)
            expected = {first: "Approved", second_unit: "Rejected", third: "Approved", fourth: "Approved"}
            wait_for(lambda: all(mturk.get_assignment(AssignmentId=assignment_of(runtime, u))["Assignment"]
                                 ["AssignmentStatus"] == s for u, s in expected.items()), timeout_s=60,
                     message="MTurk to hold the review")
            paid = assignment_of(runtime, first)
            wait_for(lambda: mturk.list_bonus_payments(AssignmentId=paid)["NumResults"] == 1, message="the bonus")
            assert assignment_of(runtime, fourth) == second["assignmentId"]

            # The bonus task delivered again, and the bonus call made again after a crash between MTurk
            # paying and our record of it: MTurk's token keeps it to one payment.
            with transaction(runtime.sessions) as session:
                bonus_call = session.scalar(select(ProviderCall.id).where(ProviderCall.action == "bonus"))
            # The crash's re-make first, then the re-delivery: enqueued before it, the Celery worker could
            # claim the call between the reset and the re-make, which then (rightly) finds it in flight.
            with transaction(runtime.sessions) as session:
                session.execute(update(ProviderCall).where(ProviderCall.id == bonus_call)
                                .values(status="pending", claimed_at=None))
            perform_call(runtime.sessions, int(bonus_call))
            runtime.queue.enqueue(PROVIDER_CALL, bonus_call)
            assert mturk.list_bonus_payments(AssignmentId=paid)["NumResults"] == 1
            assert httpx.get(f"{turk}/api/stats").json()["Rows"]["bonus"] == 1

            # An approval overrides the rejection on MTurk too.
            with transaction(runtime.sessions) as session:
                override = decide(session, second_unit, Decision.APPROVE, now=now).call_ids
            for call_id in override:
                runtime.queue.enqueue(PROVIDER_CALL, call_id)
            wait_for(lambda: mturk.get_assignment(AssignmentId=assignment_of(runtime, second_unit))["Assignment"]
                     ["AssignmentStatus"] == "Approved", message="the override")

            # Qualifications granted and revoked here reach MTurk through the ledger, in the order that
            # matters (each call sends the standing as it is when it runs), and so do notifications.
            sync_qualifications_and_notify(runtime, mturk, turk)
        runtime.close()
    for path in [*tmp_path.joinpath("data").rglob("*"), *logs.iterdir()]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def sync_qualifications_and_notify(runtime: Runtime, mturk: Any, turk: str) -> None:
    with transaction(runtime.sessions) as session:
        trained, _ = create_qualification(session, "trained", now=datetime.now(UTC))
        worker = find_worker(session, "A1SIM0")
        granted = grant(session, trained, worker.id, 7, now=datetime.now(UTC))
    assert granted is not None
    runtime.queue.enqueue(PROVIDER_CALL, granted)

    wait_for(lambda: holders(mturk, "trained") == [("A1SIM0", 7)], timeout_s=30, message="the grant on MTurk")
    with transaction(runtime.sessions) as session:
        regrant = grant(session, trained, worker.id, 9, now=datetime.now(UTC))
        assert revoke(session, trained, worker.id)
        revoked = pending_worker_calls(session, worker.id)
    assert regrant in revoked and len(revoked) == 2
    for call_id in reversed(revoked):  # carried out in the wrong order
        perform_call(runtime.sessions, call_id)
    assert holders(mturk, "trained") == [] and holders(mturk, "trained", "Revoked") == [("A1SIM0", 7)]
    with transaction(runtime.sessions) as session:
        note = record_notification(session, worker.id, "Thanks", "Your ratings were great", now=datetime.now(UTC))
    runtime.queue.enqueue(PROVIDER_CALL, note)
    wait_for(lambda: httpx.get(f"{turk}/api/workers/A1SIM0/messages").json()["Notifications"], timeout_s=30,
             message="the notification")


def _provider_args(runtime: Runtime, run_id: int) -> dict[str, Any]:
    from mephisto_dist.db.models import TaskRun

    with transaction(runtime.sessions) as session:
        run = session.get(TaskRun, run_id)
        assert run is not None
        args = dict(run.config["provider"])
    assert "secret" not in repr(args).lower() and args["aws_profile"] == "lab"
    return args


def test_an_onboarding_verdict_reaches_mturk_at_once(tmp_path: Path, redis_url: str, sqlite_url: str,
                                                     aws_home: Path) -> None:
    """The qualification an onboarding grants is copied to MTurk by the Celery worker right after the
    verdict, not on beat's re-send (no beat runs here), so the worker's standing there is right at once."""
    with mturk_local(tmp_path / "turk.sqlite3", tmp_path / "turk.log") as turk:
        mturk = client(turk)
        runtime = lab_runtime(tmp_path, sqlite_url, redis_url, turk)
        port = free_port()
        task_dir = write_task_dir(tmp_path, rows=1, port=port)
        (task_dir / "server_files" / "onboarding.html").write_text("<p>Say yes.</p>")
        run_id = create_run(runtime, prepare_run(task_dir, "example", [
            "mephisto/provider=mturk_sandbox", "mephisto.provider.requester_name=lab",
            "mephisto.blueprint.onboarding_qualification=e2e-onboarded",
            f"mephisto.blueprint.onboarding_source={task_dir / 'server_files' / 'onboarding.html'}"],
            check_port=False))
        with celery_worker(runtime.settings, tmp_path / "worker.log"), \
                web_server(runtime.settings, run_id, tmp_path / "web.log", port=port) as server:
            enqueue_launch(runtime, run_id)
            wait_for(lambda: len(our_hits(mturk)) == 1, timeout_s=60, message="the HIT")
            opened = SimulatedWorker(turk, "A1ONBOARD").accept()
            started = httpx.post(f"{server}/request_agent", json={"provider_data": {
                "worker_name": opened["workerId"], "assignment_id": opened["assignmentId"],
                "hit_id": opened["hitId"], "agent_registration_id": f"{opened['assignmentId']}-A1ONBOARD",
                "provider_type": "mturk_sandbox"}}).json()["data"]
            assert str(started["agent_id"]).startswith("onboarding_"), started
            verdict = httpx.post(f"{server}/submit_onboarding", json={"provider_data": {
                "USED_AGENT_ID": started["agent_id"], "onboarding_data": {"answer": "yes"}}}).json()["data"]
            assert verdict["agent_id"] and not str(verdict["agent_id"]).startswith("onboarding_"), verdict
            wait_for(lambda: holders(mturk, "e2e-onboarded") == [("A1ONBOARD", 1)], timeout_s=20,
                     message="the onboarding grant on MTurk")
        runtime.close()
