"""prolific-local answers as Prolific does, in process: the API at Prolific's paths with its error
bodies, places that only grow, a study that goes to AWAITING REVIEW with no place left and is active
again when one is added, the transient PROCESSING, the fields frozen after publishing, rejections that
need 100 characters and are final, a study completed once all is reviewed, a bulk bonus paid as often as
asked, participant groups and messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mephisto_dist.prolific_local.app import Service, create_app
from mephisto_dist.prolific_local.store import Store
from tests.conftest import wait_for

AUTH = {"Authorization": "Token local-test-token"}
PROCESSING_S = 0.3


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Service(Store(tmp_path / "p.sqlite3"), processing_s=PROCESSING_S)),
                    headers=AUTH) as client:
        yield client


def study(api: TestClient, places: int = 1, **extra: Any) -> dict[str, Any]:
    made = api.post("/api/v1/studies/", json={
        "name": "Rate a sentence", "internal_name": "mark", "description": "Read and rate",
        "external_study_url": "http://task.example/?participant_id={{%PROLIFIC_PID%}}&study_id={{%STUDY_ID%}}"
                              "&submission_id={{%SESSION_ID%}}",
        "prolific_id_option": "url_parameters", "completion_option": "code",
        "completion_codes": [{"code": "MDCODE1", "code_type": "COMPLETED", "actions": []}],
        "total_available_places": places, "estimated_completion_time": 5, "reward": 25, **extra})
    assert made.status_code == 201, made.text
    return dict(made.json())


def settled(api: TestClient, path: str) -> dict[str, Any]:
    """The object once Prolific's transient PROCESSING status has passed."""
    def found() -> dict[str, Any] | None:
        answer = dict(api.get(path).json())
        return answer if answer["status"] != "PROCESSING" else None

    return dict(wait_for(found, timeout_s=5, interval_s=0.05, message=f"{path} to leave PROCESSING"))


def published(api: TestClient, places: int = 1) -> str:
    study_id = str(study(api, places)["id"])
    answer = api.post(f"/api/v1/studies/{study_id}/transition/", json={"action": "PUBLISH"})
    assert answer.status_code == 200 and answer.json()["status"] == "PROCESSING"  # Prolific's transient status
    assert settled(api, f"/api/v1/studies/{study_id}/")["status"] == "ACTIVE"
    return study_id


def take(api: TestClient, study_id: str, who: str) -> dict[str, Any]:
    started = api.post(f"/local/studies/{study_id}/start", json={"participant_id": who})
    assert started.status_code == 200, started.text
    return dict(started.json())


def finish(api: TestClient, who: str, code: str = "MDCODE1") -> dict[str, Any]:
    done = api.get(f"/submissions/complete?cc={code}&PROLIFIC_PID={who}", headers={"accept": "application/json"})
    assert done.status_code == 200, done.text
    return dict(done.json())


def test_a_token_is_needed_and_errors_come_in_prolifics_shape(api: TestClient) -> None:
    refused = api.get("/api/v1/users/me/", headers={"Authorization": ""})
    assert refused.status_code == 401 and refused.json()["error"]["status"] == 401
    missing = api.get("/api/v1/studies/nope/")
    assert missing.status_code == 404 and missing.json()["error"]["title"] == "Not found"
    incomplete = api.post("/api/v1/studies/", json={"name": "x"})
    assert incomplete.status_code == 400 and "reward" in incomplete.json()["error"]["detail"]


def test_the_participant_opens_the_study_url_with_prolifics_ids_filled_in(api: TestClient) -> None:
    study_id = published(api)
    started = take(api, study_id, "P1")
    assert started["url"] == (f"http://task.example/?participant_id=P1&study_id={study_id}"
                              f"&submission_id={started['submission_id']}")
    assert take(api, study_id, "P1")["submission_id"] == started["submission_id"]  # the place they hold
    assert finish(api, "P1")["status"] == "AWAITING REVIEW"
    wrong = api.get("/submissions/complete?cc=WRONG&PROLIFIC_PID=P1")
    assert wrong.status_code == 400


def test_a_full_study_awaits_review_by_itself_and_places_only_grow(api: TestClient) -> None:
    study_id = published(api, places=1)
    take(api, study_id, "P1")
    assert api.get(f"/api/v1/studies/{study_id}/").json()["status"] == "AWAITING REVIEW"
    assert api.post(f"/local/studies/{study_id}/start", json={"participant_id": "P2"}).status_code == 400
    fewer = api.patch(f"/api/v1/studies/{study_id}/", json={"total_available_places": 0})
    assert fewer.status_code == 400 and "only be increased" in str(fewer.json()["error"]["detail"])
    frozen = api.patch(f"/api/v1/studies/{study_id}/", json={"reward": 99})
    assert frozen.status_code == 400 and "reward" in frozen.json()["error"]["detail"]
    more = api.patch(f"/api/v1/studies/{study_id}/", json={"total_available_places": 2, "internal_name": "m2"})
    assert more.status_code == 200 and more.json()["status"] == "ACTIVE"
    second = take(api, study_id, "P2")
    assert api.get(f"/api/v1/studies/{study_id}/").json()["status"] == "AWAITING REVIEW"
    assert api.post(f"/local/submissions/{second['submission_id']}/return").status_code == 200
    assert api.get(f"/api/v1/studies/{study_id}/").json()["status"] == "ACTIVE"  # a freed place re-opens it
    assert api.post(f"/api/v1/studies/{study_id}/transition/", json={"action": "STOP"}).json()["status"] \
        == "AWAITING REVIEW"
    assert api.delete(f"/api/v1/studies/{study_id}/").status_code == 400  # only an unpublished one


def test_review_is_processed_then_final_and_a_study_all_reviewed_is_completed(api: TestClient) -> None:
    study_id = published(api, places=2)
    one, two = (take(api, study_id, who)["submission_id"] for who in ("P1", "P2"))
    finish(api, "P1")
    finish(api, "P2")
    approved = api.post(f"/api/v1/submissions/{one}/transition/", json={"action": "APPROVE"})
    assert approved.json()["status"] == "PROCESSING"
    again = api.post(f"/api/v1/submissions/{one}/transition/", json={"action": "APPROVE"})
    assert again.status_code == 400 and "being processed" in again.json()["error"]["detail"]
    assert settled(api, f"/api/v1/submissions/{one}/")["status"] == "APPROVED"
    short = api.post(f"/api/v1/submissions/{two}/transition/",
                     json={"action": "REJECT", "message": "no", "rejection_category": "OTHER"})
    assert short.status_code == 400 and "message" in short.json()["error"]["detail"]
    api.post(f"/api/v1/submissions/{two}/transition/",
             json={"action": "REJECT", "message": "x" * 100, "rejection_category": "LOW_EFFORT"})
    assert settled(api, f"/api/v1/submissions/{two}/")["status"] == "REJECTED"
    assert api.post(f"/api/v1/submissions/{two}/transition/", json={"action": "APPROVE"}).status_code == 400
    assert api.get(f"/api/v1/studies/{study_id}/").json()["status"] == "COMPLETED"  # full, all reviewed
    more = api.patch(f"/api/v1/studies/{study_id}/", json={"total_available_places": 3})
    assert more.json()["status"] == "ACTIVE"  # a completed study is not finished: a place re-opens it

    bulk = api.post("/api/v1/submissions/bonus-payments/", json={"study_id": study_id, "csv_bonuses": "P1,0.50"})
    assert bulk.status_code == 201 and bulk.json()["amount"] == 50
    assert api.post(f"/api/v1/bulk-bonus-payments/{bulk.json()['id']}/pay/").status_code == 202
    assert api.get(f"/api/v1/submissions/{one}/").json()["bonus_payments"] == [50]
    # Prolific: "This endpoint is not idempotent": the same bulk bonus paid again pays again.
    assert api.post(f"/api/v1/bulk-bonus-payments/{bulk.json()['id']}/pay/").status_code == 202
    assert api.get(f"/api/v1/submissions/{one}/").json()["bonus_payments"] == [50, 50]
    assert api.get("/local/stats").json()["BonusesPaid"] == 2
    stranger = api.post("/api/v1/submissions/bonus-payments/", json={"study_id": study_id, "csv_bonuses": "PX,1"})
    assert stranger.status_code == 400


def test_workspaces_projects_groups_and_messages(api: TestClient) -> None:
    workspace = api.post("/api/v1/workspaces/", json={"title": "Lab"}).json()
    project = api.post(f"/api/v1/workspaces/{workspace['id']}/projects/", json={"title": "Ratings"}).json()
    assert [p["title"] for p in api.get(f"/api/v1/workspaces/{workspace['id']}/projects/").json()["results"]] \
        == ["Ratings"]
    assert api.get(f"/api/v1/workspaces/{workspace['id']}/balance/").json()["available_balance"] > 0
    made = study(api, project=project["id"])
    assert [s["id"] for s in api.get(f"/api/v1/projects/{project['id']}/studies/").json()["results"]] == [made["id"]]
    group = api.post("/api/v1/participant-groups/", json={"project_id": project["id"], "name": "Block list"}).json()
    api.post(f"/api/v1/participant-groups/{group['id']}/participants/", json={"participant_ids": ["P1", "P2"]})
    api.request("DELETE", f"/api/v1/participant-groups/{group['id']}/participants/", json={"participant_ids": ["P2"]})
    members = api.get(f"/api/v1/participant-groups/{group['id']}/participants/").json()["results"]
    assert [m["participant_id"] for m in members] == ["P1"]
    assert api.post("/api/v1/messages/", json={"recipient_id": "P1", "body": "thanks", "study_id": made["id"]}) \
        .status_code == 201
    assert [m["body"] for m in api.get("/api/v1/messages/?user_id=P1").json()["results"]] == ["thanks"]
