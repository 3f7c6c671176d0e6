"""A run on ``prolific`` end to end against a real prolific-local process: the study made and given a
place per unit by the Celery worker, participants taking part at prolific-local, opening the study URL at
our web server, doing the static task over HTTP and coming back to Prolific with the completion code;
review and pay through the ledger's Celery tasks, a bonus paid exactly once when its call is made again
after a crash, and the study stopped when the run shuts down."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, ProviderCall, Unit
from mephisto_dist.providers import make_provider
from mephisto_dist.providers.requesters import register, save_keys
from mephisto_dist.queue import PROVIDER_CALL
from mephisto_dist.review.decisions import Decision, NotReviewable, decide, perform_call
from mephisto_dist.runs.lifecycle import expire_available_units
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.prolific_local_process import FAKE_TOKEN, come_back, params_of, prolific_local, take_part
from tests.system import celery_worker, free_port, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system
AUTH = {"Authorization": f"Token {FAKE_TOKEN}"}


def studies(prolific: str) -> list[dict[str, Any]]:
    listed = httpx.get(f"{prolific}/api/v1/studies/", headers=AUTH).json()["results"]
    return [s for s in listed if s["internal_name"].startswith("mephisto-dist deployment=e2e ")]


def submission(prolific: str, submission_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{prolific}/api/v1/submissions/{submission_id}/", headers=AUTH).json())


def units(runtime: Runtime, run_id: int, status: str) -> list[int]:
    with transaction(runtime.sessions) as session:
        return list(session.scalars(select(Unit.id).where(Unit.task_run_id == run_id, Unit.status == status)
                                    .order_by(Unit.id)))


def submission_of(runtime: Runtime, unit_id: int) -> str:
    with transaction(runtime.sessions) as session:
        data = session.scalar(select(Agent.provider_data).join(Unit, Unit.agent_id == Agent.id)
                              .where(Unit.id == unit_id))
    return str((data or {})["assignment_id"])


def take_part_and_submit(prolific: str, server: str, study_id: str, participant: str) -> dict[str, str]:
    """What a participant's browser does: take part at Prolific, open the study URL (our task page), ask for
    a unit as the page does with Prolific's ids, submit, and follow the completion URL back to Prolific."""
    opened = params_of(str(take_part(prolific, study_id, participant)["url"]))
    assert opened["participant_id"] == participant and opened["study_id"] == study_id
    page = httpx.get(f"{server}/", params=opened)
    assert page.status_code == 200
    agent = httpx.post(f"{server}/request_agent", json={"provider_data": {
        "worker_name": participant, "assignment_id": opened["submission_id"],
        "agent_registration_id": f"{opened['submission_id']}-{participant}",
        "prolific_study_id": study_id, "provider_type": "prolific"}}).json()["data"]
    assert agent["agent_id"], agent
    sent = httpx.post(f"{server}/submit_task", json={"USED_AGENT_ID": agent["agent_id"], "final_data": {"rating": "5"}})
    assert sent.status_code == 200, sent.text
    assert come_back(opened["complete_url"], participant)["status"] == "AWAITING REVIEW"
    return opened


def test_a_run_as_a_prolific_study(tmp_path: Path, redis_url: str, sqlite_url: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROLIFIC_CREDENTIALS_FILE", str(tmp_path / "prolific" / "credentials"))
    with prolific_local(tmp_path / "prolific.sqlite3", tmp_path / "prolific.log") as prolific:
        runtime = make_runtime(tmp_path / "data", sqlite_url, redis_url, DEPLOYMENT="e2e")
        save_keys("prolific", "lab", {"api_key": FAKE_TOKEN})
        with transaction(runtime.sessions) as session:
            register(session, "prolific", "lab", aws_profile="lab", endpoint_url=prolific, now=datetime.now(UTC))
        port = free_port()
        task_dir = write_task_dir(tmp_path, rows=3, port=port)
        run_id = create_run(runtime, prepare_run(task_dir, "example", [
            "mephisto/provider=prolific", "mephisto.provider.requester_name=lab",
            "mephisto.provider.prolific_workspace_name=Lab", "mephisto.provider.prolific_project_name=Ratings"],
            check_port=False))
        logs = tmp_path / "logs"
        logs.mkdir()
        with celery_worker(runtime.settings, logs / "worker.log"), \
                web_server(runtime.settings, run_id, logs / "web.log", port=port) as server:
            enqueue_launch(runtime, run_id)
            wait_for(lambda: len(units(runtime, run_id, "launched")) == 3, timeout_s=60, message="3 units launched")
            [study] = wait_for(lambda: studies(prolific), message="the run's study")
            assert study["internal_name"] == f"mephisto-dist deployment=e2e run={run_id}"
            assert study["total_available_places"] == 3 and study["reward"] == 25
            assert study["name"] == "Test task" and study["status"] in ("ACTIVE", "PROCESSING")
            assert study["external_study_url"].startswith(f"http://localhost:{port}/?participant_id={{{{%PROLIFIC_PID%}}}}")

            first, second = (take_part_and_submit(prolific, server, study["id"], who) for who in ("P1", "P2"))
            done = wait_for(lambda: len(units(runtime, run_id, "completed")) == 2 and units(runtime, run_id,
                            "completed"), message="two units completed")
            assert {submission_of(runtime, u) for u in done} == {first["submission_id"], second["submission_id"]}

            now = datetime.now(UTC)
            paid_unit = next(u for u in done if submission_of(runtime, u) == first["submission_id"])
            refused_unit = next(u for u in done if u != paid_unit)
            with transaction(runtime.sessions) as session:
                calls = [*decide(session, paid_unit, Decision.APPROVE, now=now, note="thorough", bonus=1.5).call_ids,
                         *decide(session, refused_unit, Decision.REJECT, now=now, note="did not read").call_ids]
            for call_id in calls:
                runtime.queue.enqueue(PROVIDER_CALL, call_id)
            wait_for(lambda: submission(prolific, first["submission_id"])["bonus_payments"] == [150]
                     and submission(prolific, first["submission_id"])["status"] == "APPROVED"
                     and submission(prolific, second["submission_id"])["status"] == "REJECTED",
                     timeout_s=60, message="Prolific to hold the review and the bonus")

            # A rejection is final on Prolific: approving the unit now is refused before anything is written.
            with transaction(runtime.sessions) as session, pytest.raises(NotReviewable, match="rejection is final"):
                decide(session, refused_unit, Decision.APPROVE, now=now)

            # The bonus call made again after a crash between Prolific paying and our record: nothing more.
            with transaction(runtime.sessions) as session:
                bonus_call = session.scalar(select(ProviderCall.id).where(ProviderCall.action == "bonus"))
                session.execute(update(ProviderCall).where(ProviderCall.id == bonus_call)
                                .values(status="pending", claimed_at=None))
            perform_call(runtime.sessions, int(bonus_call))
            assert submission(prolific, first["submission_id"])["bonus_payments"] == [150]
            assert httpx.get(f"{prolific}/local/stats").json()["BonusesPaid"] == 1

            # Shutting down takes the last unit off: the study is stopped (and, both submissions reviewed,
            # completed).
            provider = make_provider("prolific", _provider_args(runtime, run_id))
            assert expire_available_units(runtime.sessions, provider, runtime.limiter, run_id,
                                          now=datetime.now(UTC)) == 1
            assert httpx.get(f"{prolific}/api/v1/studies/{study['id']}/", headers=AUTH).json()["status"] \
                == "COMPLETED"
            assert httpx.post(f"{prolific}/local/studies/{study['id']}/start",
                              json={"participant_id": "P3"}).status_code == 400
        runtime.close()
    for path in [*tmp_path.joinpath("data").rglob("*"), *logs.iterdir()]:
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    assert json.loads((tmp_path / "prolific" / "credentials").read_text()) == {"lab": FAKE_TOKEN}


def _provider_args(runtime: Runtime, run_id: int) -> dict[str, Any]:
    from mephisto_dist.db.models import TaskRun

    with transaction(runtime.sessions) as session:
        run = session.get(TaskRun, run_id)
        assert run is not None
        args = dict(run.config["provider"])
    assert FAKE_TOKEN not in repr(args) and args["endpoint_url"]
    return args
