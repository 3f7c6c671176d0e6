"""Lists on Prolific, against prolific-local in process: the allow list (a participant group of the known
workers who meet the run's qualifications, required by the study) and listings paged as Prolific pages
them, followed to the end by our provider."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select
from starlette.testclient import TestClient

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import ProviderSubmission, TaskRun, Worker
from mephisto_dist.domain.studies import SUBMIT_SETTLE_S
from mephisto_dist.prolific_local.app import Service, create_app
from mephisto_dist.prolific_local.store import Store
from mephisto_dist.providers import UnitLaunch
from mephisto_dist.providers.prolific.places import PlacesLock
from mephisto_dist.providers.prolific.provider import ProlificProvider
from mephisto_dist.reconcile.studies import StudyAccount, reconcile_studies
from mephisto_dist.review.qualifications import create_qualification, grant
from mephisto_dist.runs.launches import LaunchContext, _allowed_workers, launch_units
from tests.factories import make_run, now

AUTH = {"Authorization": "Token local-test-token"}
QUALIFIED = [{"qualification_name": "skilled", "comparator": "GreaterThanOrEqualTo", "value": 2}]
TASK = {"task_title": "Rate", "task_description": "Rate a sentence", "task_reward": 0.2}


@pytest.fixture()
def local(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Service(Store(tmp_path / "p.sqlite3"), processing_s=0.0, page_size=3)),
                    headers=AUTH) as client:
        yield client


@pytest.fixture()
def lock(redis_client: redis.Redis) -> PlacesLock:
    return PlacesLock(redis_client)


def provider(local: TestClient, lock: PlacesLock, **args: Any) -> ProlificProvider:
    # Its own endpoint name: the provider keeps each run's study per process, by endpoint.
    return ProlificProvider({"requester_name": "lab", "deployment": "lists",
                             "endpoint_url": f"http://local-{secrets.token_hex(4)}.invalid", **args},
                            client_factory=lambda access: _api_client(local),
                            places_lock=lock)


def _api_client(local: TestClient) -> TestClient:
    return TestClient(local.app, base_url="http://testserver/api/v1/", headers=AUTH)


def launch(p: ProlificProvider, run_id: int, unit_id: int, task_args: dict[str, Any]) -> str:
    return p.publish_unit(UnitLaunch(run_id, unit_id, f"launch-{run_id}-{unit_id}"), "http://task.example", task_args)


def start(local: TestClient, study_id: str, who: str) -> Any:
    return local.post(f"/local/studies/{study_id}/start", json={"participant_id": who})


def test_a_run_with_qualifications_takes_only_its_allow_list(local: TestClient, lock: PlacesLock) -> None:
    p = provider(local, lock, prolific_allow_list_group_name="Lab allow list")
    p.block_worker("PBAD", "spam", idempotency_key="b1")
    study_id = launch(p, 1, 1, {**TASK, "qualifications": QUALIFIED,
                                "allowed_workers": ["PONE", "PTWO", "PBAD", "PFOUR"]}).split(":")[0]
    launch(p, 1, 2, {**TASK, "qualifications": QUALIFIED, "allowed_workers": ["PONE"]})  # a place more
    groups = {g["name"]: g for g in local.get("/api/v1/participant-groups/?page_size=50").json()["results"]}
    allow = groups["Lab allow list"]["id"]
    members = local.get(f"/api/v1/participant-groups/{allow}/participants/?page_size=50").json()["results"]
    assert sorted(m["participant_id"] for m in members) == ["PFOUR", "PONE", "PTWO"]  # the blocked left out
    found = local.get(f"/api/v1/studies/{study_id}/").json()
    assert {"_cls": "web.eligibility.models.ParticipantGroupEligibilityRequirement",
            "attributes": [{"id": allow, "value": True}]} in found["eligibility_requirements"]
    assert found["total_available_places"] == 2
    refused = start(local, study_id, "PSTRANGER")
    assert refused.status_code == 400 and "not eligible" in refused.text
    assert start(local, study_id, "PBAD").status_code == 400
    assert start(local, study_id, "PTWO").status_code == 200
    # A member added later is let in: the group's members are checked when a participant comes.
    local.post(f"/api/v1/participant-groups/{allow}/participants/", json={"participant_ids": ["PLATE"]})
    assert start(local, study_id, "PLATE").status_code == 200


def test_no_allow_list_without_qualifications_or_anyone_known_to_meet_them(local: TestClient, lock: PlacesLock) -> None:
    p = provider(local, lock)
    open_study = launch(p, 2, 1, {**TASK, "allowed_workers": ["PONE"]}).split(":")[0]  # no requirement
    nobody = launch(p, 3, 1, {**TASK, "qualifications": QUALIFIED, "allowed_workers": []}).split(":")[0]
    for study_id in (open_study, nobody):
        assert local.get(f"/api/v1/studies/{study_id}/").json()["eligibility_requirements"] == []
        assert start(local, study_id, "PSTRANGER").status_code == 200
    names = [g["name"] for g in local.get("/api/v1/participant-groups/").json()["results"]]
    assert "Allow list" not in names


def test_the_launcher_allows_the_known_workers_who_meet_the_requirements(runtime: Any, local: TestClient, lock: PlacesLock) -> None:
    factory = runtime.sessions
    with transaction(factory) as session:
        workers = {}
        for name, provider_type, blocked in [("PHIGH", "prolific", False), ("PLOW", "prolific", False),
                                             ("PNONE", "prolific", False), ("PBLOCKED", "prolific", True),
                                             ("PBANNED", "prolific", False), ("AHIGH", "mturk", False)]:
            worker = Worker(provider_type=provider_type, worker_name=name, is_blocked=blocked)
            session.add(worker)
            session.flush()
            workers[name] = worker.id
        skilled, _ = create_qualification(session, "skilled", now=now())
        banned, _ = create_qualification(session, "banned-here", now=now())
        for name, value in [("PHIGH", 3), ("PLOW", 1), ("PBLOCKED", 5), ("PBANNED", 4), ("AHIGH", 9)]:
            grant(session, skilled, workers[name], value, now=now())
        grant(session, banned, workers["PBANNED"], 1, now=now())
    ctx = LaunchContext(runtime.limiter, provider(local, lock), 30.0, 0)
    allowed = _allowed_workers(factory, ctx, 41, {"qualifications": QUALIFIED, "block_qualification": "banned-here"})
    assert allowed == ["PHIGH"]


# -- paging -----------------------------------------------------------------------------------------------


def _with_submissions(local: TestClient, p: ProlificProvider, run_id: int, count: int) -> str:
    study_id = launch(p, run_id, 1, TASK).split(":")[0]
    p.add_places(study_id, count - 1)
    code = local.get(f"/api/v1/studies/{study_id}/").json()["completion_codes"][0]["code"]
    for number in range(count):
        assert start(local, study_id, f"P{number:03d}").status_code == 200
        done = local.get(f"/submissions/complete?cc={code}&PROLIFIC_PID=P{number:03d}",
                         headers={"accept": "application/json"})
        assert done.status_code == 200, done.text
    return study_id


def test_listings_are_paged_as_prolifics(local: TestClient, lock: PlacesLock) -> None:
    study_id = _with_submissions(local, provider(local, lock), 5, 7)
    first = local.get(f"/api/v1/submissions/?study={study_id}").json()  # the service's page size: 3
    assert len(first["results"]) == 3 and first["meta"]["count"] == 7 and first["_links"]["previous"] is None
    seen = [s["participant_id"] for s in first["results"]]
    href = first["_links"]["next"]["href"]
    while href:
        page = local.get(href).json()
        seen += [s["participant_id"] for s in page["results"]]
        href = (page["_links"]["next"] or {}).get("href")
    assert seen == [f"P{n:03d}" for n in range(7)]
    assert page["_links"]["last"]["href"] == page["_links"]["self"]["href"] and len(page["results"]) == 1
    bigger = local.get(f"/api/v1/submissions/?study={study_id}&page_size=5&page=2").json()
    assert [s["participant_id"] for s in bigger["results"]] == ["P005", "P006"] and bigger["_links"]["next"] is None
    assert local.get(f"/api/v1/submissions/?study={study_id}&page=4").status_code == 404
    assert local.get(f"/api/v1/submissions/?study={study_id}&page_size=0").status_code == 400
    empty = local.get("/api/v1/messages/?user_id=nobody").json()
    assert empty["results"] == [] and empty["meta"]["count"] == 0 and empty["_links"]["next"] is None
    for number in range(4):  # a small listing read whole is paged the same way
        local.post("/api/v1/participant-groups/", json={"project_id": "P", "name": f"G{number}"})
    groups = local.get("/api/v1/participant-groups/?project_id=P").json()
    assert groups["meta"]["count"] == 4 and len(groups["results"]) == 3 and groups["_links"]["next"] is not None


def test_our_provider_follows_every_page(local: TestClient, lock: PlacesLock) -> None:
    p = provider(local, lock, prolific_project_name="Paged")
    study_id = _with_submissions(local, p, 6, 8)
    assert sorted(s.participant_id for s in p.study_submissions(study_id)) == [f"P{n:03d}" for n in range(8)]
    for run_id in range(10, 15):  # more studies than a page, in the same project
        launch(p, run_id, 1, TASK)
    assert len([s for s in p.list_studies() if s.deployment == "lists"]) == 6
    assert launch(p, 14, 2, TASK).split(":")[0] == launch(p, 14, 1, TASK).split(":")[0]  # found on page 2
    for number in range(7):  # a block list longer than a page keeps every member out of a new study
        p.block_worker(f"PB{number}", "spam", idempotency_key=f"b{number}")
    blocked = local.get(f"/api/v1/studies/{launch(p, 20, 1, TASK).split(':')[0]}/").json()
    assert blocked["eligibility_requirements"][0]["attributes"][0]["value"] == [f"PB{n}" for n in range(7)]


def test_a_study_with_more_submissions_than_a_page_is_fully_reconciled(runtime: Any, local: TestClient, lock: PlacesLock) -> None:
    factory = runtime.sessions
    run = make_run(factory, assignments=1)
    p = provider(local, lock, prolific_project_name="Reconciled")
    study_id = _with_submissions(local, p, run.run_id, 8)
    later = now() + timedelta(seconds=SUBMIT_SETTLE_S + 1)  # past the time a submission takes to reach us
    done = reconcile_studies(factory, runtime.redis, StudyAccount("prolific", "lab", p), now=later)
    assert done.recorded == 8  # completed on Prolific, never reached us: every one, over three pages
    with transaction(factory) as session:
        recorded = session.scalars(select(ProviderSubmission.worker_name).where(
            ProviderSubmission.hit_id == study_id)).all()
    assert sorted(recorded) == [f"P{n:03d}" for n in range(8)]


def test_a_launched_run_with_qualifications_gets_its_allow_list(runtime: Any, local: TestClient,
                                                                 lock: PlacesLock) -> None:
    """The launcher, launching a run whose blueprint has qualifications, hands the provider the known
    qualified workers; the study it makes requires the allow-list group holding them."""
    factory = runtime.sessions
    run = make_run(factory, assignments=3, launch=False)
    with transaction(factory) as session:
        task_run = session.get(TaskRun, run.run_id)
        assert task_run is not None
        task_run.config = {**task_run.config, "blueprint": {"qualifications": QUALIFIED},
                           "task": {**task_run.config["task"], **TASK}}
        for name, value in [("PGOOD", 2), ("PWEAK", 1)]:
            worker = Worker(provider_type="prolific", worker_name=name)
            session.add(worker)
            session.flush()
            grant(session, create_qualification(session, "skilled", now=now())[0], worker.id, value, now=now())
    assert launch_units(factory, LaunchContext(runtime.limiter, provider(local, lock), 30.0, 0), run.run_id,
                        now=now()) == 3
    study = local.get("/api/v1/studies/").json()["results"][0]
    assert study["total_available_places"] == 3
    group = study["eligibility_requirements"][-1]["attributes"][0]["id"]
    members = local.get(f"/api/v1/participant-groups/{group}/participants/").json()["results"]
    assert [m["participant_id"] for m in members] == ["PGOOD"]
    assert start(local, study["id"], "PWEAK").status_code == 400 and start(local, study["id"], "PGOOD").status_code == 200
