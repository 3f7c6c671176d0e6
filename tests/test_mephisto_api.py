"""Mephisto's TaskReview JSON API (issue 22), served by the review app in this process (Starlette's test
client) against a real database: every route with a signed-in session, the shapes Mephisto's client
reads, decisions paid once through the review ledger with their reviewer, and refusals (no session, bad
ids, malformed bodies, unknown keys, requests from another site) that answer one line and change
nothing. A TaskReview client build is served beside our pages."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from starlette.testclient import TestClient

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import (
    Agent,
    GrantedQualification,
    ProviderCall,
    Qualification,
    ReviewBatch,
    TaskRun,
    Unit,
    UnitReview,
    Worker,
)
from mephisto_dist.review import batches
from mephisto_dist.review.decisions import Decision
from mephisto_dist.review_app.app import make_app
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import load_settings
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.conftest import wait_for
from tests.factories import make_run, now
from tests.test_review_app import submitted_run

JSON = {"Content-Type": "application/json"}


def api_client(engine: Engine, data_dir: Path, client_dir: Path | None = None) -> TestClient:
    url = engine.url.render_as_string(hide_password=False)
    runtime = Runtime(load_settings({"MEPHISTO_DIST_DATA_DIR": str(data_dir), "MEPHISTO_DIST_DATABASE_URL": url}))
    app = make_app(runtime, {"ada": "correct-horse"}, "s" * 40, mephisto_client=client_dir)
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def signed_in(engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(engine, tmp_path / "data") as client:
        assert client.post("/login", data={"reviewer": "ada", "password": "correct-horse"}).status_code == 303
        yield client


def task_id_of(engine: Engine, run_id: int) -> int:
    with transaction(make_sessionmaker(engine)) as session:
        return int(session.scalar(select(TaskRun.task_id).where(TaskRun.id == run_id)) or 0)


def ledger(engine: Engine) -> list[tuple[str, str, int | None]]:
    with transaction(make_sessionmaker(engine)) as session:
        return sorted(session.execute(select(ProviderCall.action, ProviderCall.status, ProviderCall.unit_id)).all(),
                      key=str)


def reviews(engine: Engine) -> list[tuple[int, str, str | None, float | None, str | None]]:
    with transaction(make_sessionmaker(engine)) as session:
        return [tuple(r) for r in session.execute(  # type: ignore[misc]
            select(UnitReview.unit_id, UnitReview.status, UnitReview.note, UnitReview.bonus, UnitReview.decided_by)
            .order_by(UnitReview.id))]


def test_the_api_needs_a_session(engine: Engine, tmp_path: Path) -> None:
    with api_client(engine, tmp_path / "data") as client:
        for method, path in (("GET", "/api/tasks"), ("GET", "/api/units?task_id=1"),
                             ("POST", "/api/units/approve")):
            answer = client.request(method, path, json={"unit_ids": [1]})
            assert answer.status_code == 401, path
            assert answer.json() == {"error": "sign in first (/login): this API needs the review app's session"}


def test_tasks_units_and_details_in_mephistos_shapes(signed_in: TestClient, engine: Engine) -> None:
    run_id, units = submitted_run(make_sessionmaker(engine))
    task_id = task_id_of(engine, run_id)
    tasks = signed_in.get("/api/tasks").json()["tasks"]
    assert [(t["id"], t["name"], t["is_reviewed"], t["unit_count"]) for t in tasks] == [
        (str(task_id), "review-app-task", False, 3)]
    task = signed_in.get(f"/api/tasks/{task_id}").json()
    assert (task["id"], task["name"], task["type"]) == (str(task_id), "review-app-task", "static_task")

    pairs = signed_in.get(f"/api/tasks/{task_id}/worker-units-ids").json()["worker_units_ids"]
    assert len(pairs) == 3 and {p["unit_id"] for p in pairs} >= {str(units["ann"]), str(units["bob"])}
    assert [sorted(p) for p in pairs] == [["unit_id", "worker_id"]] * 3
    assert all(isinstance(p["worker_id"], str) and p["worker_id"].isdigit() for p in pairs)
    assert [int(p["unit_id"]) for p in pairs] == sorted(int(p["unit_id"]) for p in pairs), "in unit id order"

    listed = signed_in.get("/api/units", params={"task_id": task_id}).json()["units"]
    assert len(listed) == 3
    first = next(u for u in listed if u["id"] == str(units["bob"]))
    assert first["status"] == "completed" and first["task_id"] == str(task_id) and first["pay_amount"] == 0.5
    assert set(first["results"]) == {"start", "end", "inputs_preview", "outputs_preview"}
    assert first["review"] == {"bonus": None, "review_note": None} and first["is_reviewed"] is False
    assert first["created_at"] == first["creation_date"] and first["worker_id"] is not None
    named = signed_in.get("/api/units", params={"unit_ids": f"{units['ann']},{units['bob']}"}).json()["units"]
    assert sorted(u["id"] for u in named) == sorted([str(units["ann"]), str(units["bob"])])

    details = signed_in.get("/api/units/details", params={"unit_ids": str(units["ann"])}).json()["units"]
    assert len(details) == 1
    assert details[0]["outputs"] == {"answer": "ann says <b>hi</b>"}
    assert details[0]["inputs"]["text"].startswith("item ")
    assert details[0]["metadata"] == {"unit_reviews": []} and details[0]["has_task_source_review"] is False

    # Tips, feedback and an opinion the worker left (``/submit_metadata``) come with the unit.
    opinion = {"questions": [{"question": "Was it clear?", "answer": "mostly"}], "attachments": []}
    metadata = {"tips": [{"text": "read twice"}], "feedback": [{"text": "fun"}], "worker_opinion": opinion}
    with transaction(make_sessionmaker(engine)) as session:
        agent_id = session.scalar(select(Unit.agent_id).where(Unit.id == units["bob"]))
        session.execute(update(Agent).where(Agent.id == agent_id).values(task_metadata=metadata))
    details = signed_in.get("/api/units/details", params={"unit_ids": str(units["bob"])}).json()["units"]
    assert details[0]["metadata"] == {**metadata, "unit_reviews": []}
    opinions = signed_in.get(f"/api/tasks/{task_id}/worker-opinions").json()
    assert opinions["task_name"] == "review-app-task"
    assert [(o["unit_id"], o["data"]) for o in opinions["worker_opinions"]] == [(str(units["bob"]), opinion)]

    assert signed_in.get(f"/api/tasks/{task_id}/timeline").json() == {
        "dashboard_url": None, "server_is_available": False, "task_name": "review-app-task"}
    stats = signed_in.get(f"/api/tasks/{task_id}/stats-results")
    assert stats.status_code == 400 and "not supported" in stats.json()["error"]


def test_decisions_are_paid_once_through_the_ledger_and_record_the_reviewer(
        signed_in: TestClient, engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run_id, units = submitted_run(factory)
    with transaction(factory) as session:
        ann_units = list(session.scalars(select(Unit.id).join(Worker, Worker.id == Unit.worker_id)
                                         .where(Worker.worker_name == "ann").order_by(Unit.id)))
    approved = signed_in.post("/api/units/approve", json={"unit_ids": [str(u) for u in ann_units],
                                                          "review_note": "careful work", "bonus": 0.25,
                                                          "send_to_worker": True})
    assert approved.status_code == 200 and approved.json() == {}
    again = signed_in.post("/api/units/approve", json={"unit_ids": [ann_units[0]]})
    assert again.status_code == 409 and again.json()["error"].startswith(f"unit {ann_units[0]} is accepted")
    refused = signed_in.post("/api/units/reject", json={"unit_ids": [units["bob"]]})
    assert refused.status_code == 400 and refused.json() == {"error": "a rejection needs a reason: the worker is "
                                                                      "shown it"}
    assert signed_in.post("/api/units/reject", json={"unit_ids": [units["bob"]],
                                                     "review_note": "wrong question"}).status_code == 200

    assert reviews(engine) == [(ann_units[0], "accepted", "careful work", 0.25, "app:ada"),
                               (ann_units[1], "accepted", "careful work", 0.25, "app:ada"),
                               (units["bob"], "rejected", "wrong question", None, "app:ada")]
    # No Redis configured: the app made the (mock) provider calls itself, each once; the note went to ann.
    assert ledger(engine) == sorted([("approve", "done", ann_units[0]), ("approve", "done", ann_units[1]),
                                     ("bonus", "done", ann_units[0]), ("bonus", "done", ann_units[1]),
                                     ("notify", "done", None), ("reject", "done", units["bob"])], key=str)
    stats = signed_in.get("/api/review-stats", params={"task_id": task_id_of(engine, run_id)}).json()["stats"]
    assert stats == {"total_count": 3, "reviewed_count": 3, "approved_count": 2, "rejected_count": 1,
                     "soft_rejected_count": 0}
    details = signed_in.get("/api/units/details", params={"unit_ids": str(ann_units[0])}).json()["units"][0]
    assert [(r["status"], r["bonus"], r["review_note"]) for r in details["metadata"]["unit_reviews"]] == [
        ("accepted", 0.25, "careful work")]
    tasks = signed_in.get("/api/tasks").json()["tasks"]
    assert tasks[0]["is_reviewed"] is True
    # Reviewed units no longer wait: Mephisto's list shows completed units only.
    assert signed_in.get("/api/units", params={"task_id": task_id_of(engine, run_id)}).json() == {"units": []}


def test_soft_rejection_and_a_long_approval_as_a_batch(signed_in: TestClient, engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=130, task_name="many")
    unit_ids = []
    for index in range(130):
        reg = Registration.from_request({"provider_data": {"worker_name": f"w{index % 7}",
                                                           "assignment_id": f"a{index}"}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            claims.submit_task(session, run, details.agent_id, {"n": index}, now=now())
            unit_ids.append(int(session.scalar(select(Unit.id).where(Unit.agent_id == details.agent_id)) or 0))
    soft = signed_in.post("/api/units/soft-reject", json={"unit_ids": unit_ids[:1], "review_note": "thin"})
    assert soft.status_code == 200
    answer = signed_in.post("/api/units/approve", json={"unit_ids": unit_ids[1:]})
    assert answer.status_code == 200 and set(answer.json()) == {"batch_id"}  # returned at once
    batch_id = int(answer.json()["batch_id"])

    def paid() -> bool:  # a chunk's provider calls are made after its decisions commit
        with transaction(factory) as session:
            batch = session.get(ReviewBatch, batch_id)
            return batch is not None and batch.finished_at is not None and session.scalar(
                select(func.count()).select_from(ProviderCall).where(ProviderCall.status != "done")) == 0

    wait_for(paid, 60, message="the batch to be worked and paid")
    with transaction(factory) as session:
        batch = session.get(ReviewBatch, batch_id)
        assert batch is not None and (batch.total, batch.decided, batch.skipped) == (129, 129, 0)
        statuses = dict(session.execute(select(Unit.status, func.count()).where(Unit.task_run_id == run.run_id)
                                        .group_by(Unit.status)).all())
        approvals = session.scalar(select(func.count()).select_from(ProviderCall).where(
            ProviderCall.action == "approve", ProviderCall.status == "done"))
        by = set(session.scalars(select(UnitReview.decided_by)))
    assert statuses == {"accepted": 129, "soft_rejected": 1}
    assert approvals == 130 and by == {"app:ada"}  # the soft rejection pays too, as an approval


def test_refusals_answer_one_line_and_change_nothing(signed_in: TestClient, engine: Engine) -> None:
    run_id, units = submitted_run(make_sessionmaker(engine))
    unit = units["ann"]
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/api/units/approve", {"json": {"unit_ids": [unit, 999999]}}, 404, "unit 999999 does not exist"),
        ("POST", "/api/units/approve", {"json": {"unit_ids": [unit], "colour": "red"}}, 400,
         "unknown key 'colour'; this route takes bonus, review_note, send_to_worker, unit_ids"),
        ("POST", "/api/units/approve", {"content": b"{not json", "headers": JSON}, 400, "the body is not JSON"),
        ("POST", "/api/units/approve", {"content": b"[1, 2]", "headers": JSON}, 400,
         "the body must be a JSON object"),
        ("POST", "/api/units/approve", {"json": {}}, 400, "`unit_ids` must be given: a list of unit ids"),
        ("POST", "/api/units/approve", {"json": {"unit_ids": ["x1"]}}, 400,
         "`unit_ids` holds 'x1', which is not a unit id"),
        ("POST", "/api/units/approve", {"json": {"unit_ids": [unit], "bonus": "lots", "review_note": "n"}}, 400,
         "bonus 'lots' is not an amount in dollars"),
        ("POST", "/api/units/approve", {"json": {"unit_ids": [unit], "bonus": 1}}, 400,
         "a bonus needs a reason: the provider shows it to the worker"),
        ("POST", "/api/units/approve", {"data": {"unit_ids": str(unit)}}, 415,
         "send the body as JSON with Content-Type: application/json (this API takes nothing else)"),
        ("POST", "/api/units/approve", {"json": {"unit_ids": [unit]}, "headers": {"Origin": "https://evil.example"}},
         403, "a request from https://evil.example is refused: this API answers its own pages only"),
        ("POST", "/api/units/approve", {"json": {"unit_ids": [unit]}, "headers": {"Sec-Fetch-Site": "cross-site"}},
         403, "a request started by another site is refused: this API answers its own pages only"),
        ("POST", "/api/workers/999999/block", {"json": {"review_note": "spam"}}, 404, "worker 999999 does not exist"),
        ("POST", f"/api/workers/{1}/block", {"json": {}}, 400, "`review_note` must be given: why the worker is blocked"),
        ("GET", "/api/units", {}, 400, "give `task_id` or `unit_ids` (or both)"),
        ("GET", "/api/units?unit_ids=1,x", {}, 400, "`unit_ids` must be a comma-separated list of integers, got '1,x'"),
        ("GET", "/api/units?task_id=999999", {}, 404, "task 999999 does not exist"),
        ("GET", "/api/units/details", {}, 400, "`unit_ids` must be given: a comma-separated list of unit ids"),
        ("GET", "/api/tasks/999999", {}, 404, "task 999999 does not exist"),
        ("GET", "/api/review-stats?since=yesterday", {}, 400,
         "`since` must be a date or time (ISO 8601), got 'yesterday'"),
        ("GET", "/api/review-stats?limit=ten", {}, 400, "`limit` must be an integer, got 'ten'"),
        ("GET", "/api/tasks/abc", {}, 404, "no API route GET /api/tasks/abc"),
        ("PUT", "/api/units/approve", {"json": {}}, 404, "no API route PUT /api/units/approve"),
        ("POST", "/api/qualifications", {"json": {"description": "no name"}}, 400, "`name` must be given"),
        ("POST", "/api/qualifications/999/workers/1/grant", {"json": {"unit_ids": [unit]}}, 404,
         "qualification 999 does not exist"),
    ]
    for method, path, options, status, error in cases:
        answer = signed_in.request(method, path, **options)
        assert (answer.status_code, answer.json()["error"][:len(error)]) == (status, error), (path, answer.text)
    assert reviews(engine) == [] and ledger(engine) == []
    with transaction(make_sessionmaker(engine)) as session:
        assert session.scalar(select(func.count()).select_from(Qualification)) == 0
        assert not any(session.scalars(select(Worker.is_blocked)))
        assert set(session.scalars(select(Unit.status).where(Unit.task_run_id == run_id))) == {"completed", "launched"}


def test_qualifications_grants_and_blocks(signed_in: TestClient, engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run_id, units = submitted_run(factory)
    with transaction(factory) as session:
        ann = int(session.scalar(select(Worker.id).where(Worker.worker_name == "ann")) or 0)
        bob = int(session.scalar(select(Worker.id).where(Worker.worker_name == "bob")) or 0)
    created = signed_in.post("/api/qualifications", json={"name": "careful", "description": "reads the question"})
    assert created.status_code == 200
    qualification = created.json()
    assert (qualification["name"], qualification["description"]) == ("careful", "reads the question")
    qid = qualification["id"]
    duplicate = signed_in.post("/api/qualifications", json={"name": "careful"})
    assert duplicate.status_code == 409 and duplicate.json() == {"error": "a qualification named 'careful' already "
                                                                          "exists"}
    assert [q["name"] for q in signed_in.get("/api/qualifications").json()["qualifications"]] == ["careful"]
    assert signed_in.get(f"/api/qualifications/{qid}").json() == qualification

    grant = signed_in.post(f"/api/qualifications/{qid}/workers/{ann}/grant",
                           json={"unit_ids": [units["ann"]], "value": 3})
    assert grant.status_code == 200
    assert signed_in.get(f"/api/qualifications/{qid}/details").json() == {"granted_qualifications_count": 1}
    holders = signed_in.get(f"/api/qualifications/{qid}/workers",
                            params={"task_id": task_id_of(engine, run_id)}).json()["workers"]
    assert [(h["worker_id"], h["value"]) for h in holders] == [(str(ann), 3)]
    granted = signed_in.get("/api/granted-qualifications").json()["granted_qualifications"]
    assert [(g["worker_name"], g["qualification_name"], g["value_current"]) for g in granted] == [
        ("ann", "careful", 3)]
    assert [q["name"] for q in signed_in.get("/api/qualifications", params={"worker_id": ann}).json()[
        "qualifications"]] == ["careful"]
    assert signed_in.patch(f"/api/qualifications/{qid}/workers/{ann}/grant", json={"value": 5}).status_code == 200
    mine = signed_in.get(f"/api/workers/{ann}/qualifications").json()["granted_qualifications"]
    assert [(g["qualification_id"], g["value"]) for g in mine] == [(qid, 5)]

    renamed = signed_in.patch(f"/api/qualifications/{qid}", json={"name": "very-careful"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "very-careful"
    deleted = signed_in.delete(f"/api/qualifications/{qid}", headers=JSON)
    assert deleted.status_code == 405 and "not supported" in deleted.json()["error"]

    assert signed_in.post(f"/api/qualifications/{qid}/workers/{ann}/revoke",
                          json={"unit_ids": [units["ann"]]}).status_code == 200
    twice = signed_in.post(f"/api/qualifications/{qid}/workers/{ann}/revoke", json={"unit_ids": [units["ann"]]})
    assert twice.status_code == 409 and twice.json() == {"error": "worker ann does not hold 'very-careful'"}
    with transaction(factory) as session:
        assert session.scalar(select(func.count()).select_from(GrantedQualification)) == 0

    blocked = signed_in.post(f"/api/workers/{bob}/block", json={"review_note": "copied answers",
                                                              "unit_ids": [units["bob"]]})
    assert blocked.status_code == 200
    with transaction(factory) as session:
        worker = session.get(Worker, bob)
        assert worker is not None and (worker.is_blocked, worker.block_reason) == (True, "copied answers")
    assert ledger(engine) == [("block", "done", None)]


def test_a_taskreview_client_build_is_served_beside_our_pages(engine: Engine, tmp_path: Path) -> None:
    build = tmp_path / "build"
    (build / "static" / "js").mkdir(parents=True)
    inline = "window.__runtime=1;"
    (build / "index.html").write_text(f'<!doctype html><html><head><script>{inline}</script>'
                                      '<script defer src="/static/js/main.1.js"></script></head>'
                                      '<body><div id="root"></div></body></html>')
    (build / "static" / "js" / "main.1.js").write_text("console.log('TaskReview');")
    (build / "favicon.ico").write_bytes(b"\0icon")
    (tmp_path / "secret.txt").write_text("not yours")
    with api_client(engine, tmp_path / "data", client_dir=build) as client:
        assert client.get("/tasks").status_code == 303  # a sign-in first
        assert client.post("/login", data={"reviewer": "ada", "password": "correct-horse",
                                           "next": "/tasks/1/units"}).headers["location"] == "/tasks/1/units"
        page = client.get("/tasks/1/units")
        assert page.status_code == 200 and '<div id="root">' in page.text
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in page.headers["content-security-policy"]
        assert client.get("/qualifications/3").text == page.text
        assert client.get("/static/js/main.1.js").text == "console.log('TaskReview');"
        assert "font-family" in client.get("/static/app.css").text  # ours still come first
        assert client.get("/favicon.ico").content == b"\0icon"
        assert client.get("/static/../../secret.txt").status_code == 404
        assert client.get("/static/%2e%2e/%2e%2e/secret.txt").status_code == 404
        assert client.get("/nothing-here").status_code == 404
        assert client.get("/").status_code == 200  # our runs page stays at the root


def test_a_batch_a_stopped_app_left_unfinished_is_finished_when_it_starts_again(engine: Engine,
                                                                                 tmp_path: Path) -> None:
    factory = make_sessionmaker(engine)
    run_id, units = submitted_run(factory)
    started = batches.start_batch(factory, Decision.APPROVE, [units["ann"], units["bob"]], run_id=run_id,
                                  note=None, bonus=None, by="app:ada", now=now())  # the app stopped here
    with api_client(engine, tmp_path / "data"):  # no Redis configured: the app works it itself
        wait_for(lambda: batches.batch_progress(factory, started.batch.batch_id).finished, 30,
                 message="the batch to be finished")
    assert [(status, by) for _, status, _, _, by in reviews(engine)] == [("accepted", "app:ada")] * 2


def test_a_units_uploaded_files_by_name_or_field(engine: Engine, tmp_path: Path) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1, task_name="uploads")
    reg = Registration.from_request({"provider_data": {"worker_name": "ann", "assignment_id": "a1"}})
    key = f"uploads/{run.run_id}/abc/photo.png"
    with transaction(factory) as session:
        details = claims.register_agent(session, run, reg, now=now())
        assert details.agent_id
        claims.submit_task(session, run, details.agent_id, {"photo": {"storage_key": key, "filename": "photo.png",
                                                                      "content_type": "image/png"}}, now=now())
        unit_id = int(session.scalar(select(Unit.id).where(Unit.agent_id == details.agent_id)) or 0)
    with api_client(engine, tmp_path / "data") as client:  # its runtime's storage: the data directory's
        runtime = Runtime(load_settings({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"),
                                         "MEPHISTO_DIST_DATABASE_URL": engine.url.render_as_string(
                                             hide_password=False)}))
        runtime.storage.put(key, io.BytesIO(b"\x89PNG..."))
        client.post("/login", data={"reviewer": "ada", "password": "correct-horse"})
        assert client.get(f"/api/units/{unit_id}/static/photo.png").content == b"\x89PNG..."
        assert client.get(f"/api/units/{unit_id}/static/fieldname/photo").content == b"\x89PNG..."
        missing = client.get(f"/api/units/{unit_id}/static/other.png")
        assert missing.status_code == 404 and missing.json() == {
            "error": f"unit {unit_id} has no uploaded file 'other.png'"}
        assert client.get(f"/api/units/{unit_id}/static/fieldname/answer").status_code == 404
        assert client.get("/api/units/999999/static/photo.png").json() == {"error": "unit 999999 does not exist"}
        details_json = client.get("/api/units/details", params={"unit_ids": unit_id}).json()["units"][0]
        assert details_json["unit_data_folder"].startswith("data/data")
