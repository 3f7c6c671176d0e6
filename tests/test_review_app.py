"""The review app (issue 22): ``mephisto-dist review-app`` as a researcher uses it, in Chromium against the
real process: it refuses to start without reviewers; every page needs a sign-in; a decision made in it
goes through the review ledger once, records its reviewer and shows in export; a form without the
session's CSRF token, a forged unit or file, and a redirect elsewhere are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Agent, ProviderCall, TaskRun, Unit, UnitReview
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.browser import free_port, wait_for
from tests.factories import make_run, now

pytestmark = pytest.mark.system

REVIEWERS = "ada:correct-horse,ben:battery-staple"
SCREENSHOTS = Path(os.environ.get("MEPHISTO_DIST_SCREENSHOTS", "/tmp/review-app-screens"))


def app_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update(MEPHISTO_DIST_DATA_DIR=str(data_dir), MEPHISTO_DIST_DATABASE_URL=database_url, COLUMNS="200",
               **extra)
    return env


def submitted_run(factory: Any) -> tuple[int, dict[str, int]]:
    """A run with ann's two units and bob's one submitted, one unit still launched."""
    run = make_run(factory, assignments=4, task_name="review-app-task")
    units: dict[str, int] = {}
    for worker, assignment in (("ann", "a1"), ("ann", "a2"), ("bob", "b1")):
        reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": assignment}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            claims.submit_task(session, run, details.agent_id, {"answer": f"{worker} says <b>hi</b>"}, now=now())
            units.setdefault(worker, session.scalar(select(Unit.id).where(Unit.agent_id == details.agent_id)) or 0)
    return run.run_id, units


@pytest.fixture
def review_app(tmp_path: Path, engine: Engine) -> Iterator[tuple[str, Engine]]:
    database_url = engine.url.render_as_string(hide_password=False)
    port = free_port()
    log = (tmp_path / "review-app.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mephisto_dist.cli.app", "review-app", "--port", str(port)],
        env=app_env(database_url, tmp_path / "data", MEPHISTO_DIST_REVIEW_USERS=REVIEWERS,
                    MEPHISTO_DIST_REVIEW_SECRET="s" * 40),
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), 30, "the review app never answered")
        yield url, engine
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def _calls(factory: Any) -> list[tuple[str, str]]:
    with transaction(factory) as session:
        return sorted((str(a), str(s)) for a, s in session.execute(select(ProviderCall.action, ProviderCall.status)))


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/login", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_it_refuses_to_start_without_reviewers(tmp_path: Path, sqlite_url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "review-app", "--port", str(free_port())],
                            env=app_env(sqlite_url, tmp_path / "data"), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == ("error: review-app needs reviewers: set "
                                     "MEPHISTO_DIST_REVIEW_USERS=reviewer:password (several: comma-separated)")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_reviewer_signs_in_watches_a_run_and_approves_and_rejects_in_the_browser(
        review_app: tuple[str, Engine], browser: Any) -> None:
    url, engine = review_app
    factory = make_sessionmaker(engine)
    run_id, units = submitted_run(factory)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page = browser.new_page()
    page.goto(f"{url}/runs/{run_id}")
    assert page.url.startswith(f"{url}/login")  # every page needs a sign-in
    page.fill("input[name=reviewer]", "ada")
    page.fill("input[name=password]", "wrong")
    with page.expect_navigation():
        page.click("form.login button")
    assert "unknown reviewer or wrong password" in page.inner_text("main")
    page.fill("input[name=reviewer]", "ada")
    page.fill("input[name=password]", "correct-horse")
    page.click("form.login button")
    page.wait_for_url(f"{url}/runs/{run_id}")
    live = page.inner_text("#live")
    assert "completed\n3" in live.replace("\t", "\n") and "launched\n1" in live.replace("\t", "\n"), live
    page.screenshot(path=str(SCREENSHOTS / "run.png"), full_page=True)

    page.click("text=Review its completed units")
    page.wait_for_url(f"{url}/runs/{run_id}/review")
    # The worker's answer is shown as text: their markup is never rendered.
    assert "ann says <b>hi</b>" in page.inner_text(f"#u{units['ann']}")
    page.screenshot(path=str(SCREENSHOTS / "review.png"), full_page=True)

    with page.expect_navigation():  # no feedback: refused, nothing recorded
        page.locator(f"#u{units['bob']} button[value=reject]").click()
    assert "a rejection needs a reason" in page.inner_text("main")
    page.go_back()
    page.locator(f"#u{units['bob']} input[name=reason]").fill("answered another question")
    page.locator(f"#u{units['bob']} button[value=reject]").click()
    page.wait_for_url(f"{url}/runs/{run_id}/review?said=*")
    assert f"reject: unit(s) {units['bob']}" in page.inner_text(".said")

    page.click("text=Approve all of ann's completed units…")
    assert "Approve ann's 2 completed unit(s)" in page.inner_text("main")
    assert "$1.00" in page.inner_text("main")  # two units at $0.50, before the fee
    page.on("dialog", lambda dialog: dialog.accept())  # "Approve 2 unit(s)?"
    page.fill("input[name=bonus]", "0.25")
    with page.expect_navigation():  # a bonus without a reason: refused, nothing recorded
        page.click("button[data-confirm]")
    assert "a bonus needs a reason" in page.inner_text("main")
    page.go_back()
    page.fill("input[name=bonus]", "0.25")
    page.fill("input[name=reason]", "careful work")
    with page.expect_navigation():
        page.click("button[data-confirm]")
    # A bulk approval is a review batch: the page answers at once and shows its progress, refreshing itself.
    assert "/batches/" in page.url, (page.url, page.inner_text("main"))
    page.wait_for_selector("[data-finished=true]", timeout=30_000)
    assert "2 of 2 unit(s) worked, 2 approved; by app:ada" in page.inner_text("#live")
    page.screenshot(path=str(SCREENSHOTS / "batch.png"), full_page=True)
    page.click("text=Back to the review")
    assert "No completed unit waits for a decision" in page.inner_text("main")
    page.screenshot(path=str(SCREENSHOTS / "after.png"), full_page=True)

    with transaction(factory) as session:
        reviews = session.execute(select(UnitReview.unit_id, UnitReview.status, UnitReview.decided_by)
                                  .order_by(UnitReview.id)).all()
    assert [(status, by) for _, status, by in reviews] == [
        ("rejected", "app:ada"), ("accepted", "app:ada"), ("accepted", "app:ada")]
    # The embedded default has no Celery worker between runs: the app made the (mock) calls itself, once.
    wait_for(lambda: all(status == "done" for _, status in _calls(factory)), 30, "the batch's calls to be made")
    assert _calls(factory) == [("approve", "done"), ("approve", "done"), ("bonus", "done"), ("bonus", "done"),
                               ("reject", "done")]

    page.goto(f"{url}/workers")
    table = page.inner_text("table")
    assert "ann" in table and "bob" in table and "100%" in table and "0%" in table


def test_forms_without_the_session_token_forged_ids_and_open_redirects_are_refused(
        review_app: tuple[str, Engine]) -> None:
    url, engine = review_app
    run_id, units = submitted_run(make_sessionmaker(engine))
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        assert client.get("/").status_code == 303
        assert client.post("/units/decide", data={"unit_id": units["ann"], "decision": "approve"}).status_code == 401
        signed = client.post("/login", data={"reviewer": "ben", "password": "battery-staple",
                                             "next": "https://evil.example/"})
        assert signed.status_code == 303 and signed.headers["location"] == "/"  # never off-site
        page = client.get(f"/runs/{run_id}/review")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        stale = client.post("/units/decide", data={"unit_id": units["ann"], "decision": "approve", "csrf": "x"})
        assert stale.status_code == 403 and "CSRF check failed" in stale.text
        assert client.get(f"/units/{units['ann']}/files/uploads/1/other-run-file.txt").status_code == 404
        assert client.get("/runs/999999").status_code == 404
        assert client.get("/runs/abc").status_code == 400
        tampered = client.cookies.get("mephisto_dist_review", "")
        client.cookies.set("mephisto_dist_review", tampered[:-4] + "0000")
        assert client.get("/").status_code == 303  # a forged cookie is no session
    with transaction(make_sessionmaker(engine)) as session:
        assert session.scalars(select(UnitReview.id)).all() == []


def test_a_reviewer_accepts_a_tip_into_the_tips_file_and_marks_feedback_reviewed(
        review_app: tuple[str, Engine], browser: Any, tmp_path: Path) -> None:
    url, engine = review_app
    factory = make_sessionmaker(engine)
    run_id, units = submitted_run(factory)
    location = tmp_path / "accepted-tips.csv"
    with transaction(factory) as session:
        run = session.get(TaskRun, run_id)
        assert run is not None
        run.config = {**run.config, "blueprint": {"tips_location": str(location)}}
        agent = session.scalar(select(Agent).join(Unit, Unit.agent_id == Agent.id).where(Unit.id == units["ann"]))
        assert agent is not None
        agent.task_metadata = {"tips": [{"id": "t1", "header": "Hint", "text": "Check <both> sides", "accepted": False},
                                        {"id": "t2", "header": "", "text": "buy my course", "accepted": False}],
                               "feedback": [{"id": "f1", "question": "Clear?", "text": "Yes", "reviewed": False}]}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    page.goto(f"{url}/tips")
    page.fill("input[name=reviewer]", "ada")
    page.fill("input[name=password]", "correct-horse")
    page.click("form.login button")
    page.wait_for_url(f"{url}/tips")
    assert "Check <both> sides" in page.inner_text("#tip-t1") and str(location) in page.inner_text("#tip-t1")
    page.screenshot(path=str(SCREENSHOTS / "tips.png"), full_page=True)
    page.locator("#tip-t1 button[value=accept]").click()
    page.wait_for_url(f"{url}/tips?said=*")
    assert "added to the tips file" in page.inner_text("main")
    page.locator("#tip-t2 button[value=reject]").click()
    page.wait_for_url(f"{url}/tips?said=*reject*")
    page.locator("#feedback-f1 button[value=reviewed]").click()
    page.wait_for_url(f"{url}/tips?said=*reviewed*")
    assert "No tip or feedback answer is waiting" in page.inner_text("main")
    page.goto(f"{url}/workers")
    page.click("text=ann")  # the worker's own page
    page.wait_for_url(f"{url}/workers/*")
    record = page.inner_text("main")
    assert "2 submitted" in record and "median time per unit" in record and "review-app-task" in record, record
    page.fill("input[name=name]", "trusted-rater")
    page.fill("input[name=value]", "2")
    page.click("button[value=grant]")
    page.wait_for_url(f"{url}/workers/*said=granted*")
    assert "trusted-rater = 2" in page.inner_text("#qualifications")
    page.screenshot(path=str(SCREENSHOTS / "worker.png"), full_page=True)
    page.click("#qualifications button[value=revoke]")
    page.wait_for_url(f"{url}/workers/*said=revoked*")
    assert "none" in page.inner_text("#qualifications")

    with httpx.Client(base_url=url, follow_redirects=False) as client:
        client.post("/login", data={"reviewer": "ben", "password": "battery-staple"})
        csrf = client.get("/tips").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"csrf": csrf, "unit_id": str(units["ann"]), "next": "/tips"}
        assert client.post("/tips/decide", data={**form, "note_id": "t1", "action": "accept", "csrf": "stale"}
                           ).status_code == 403
        again = client.post("/tips/decide", data={**form, "note_id": "t1", "action": "accept"})
        assert "already%20decided" in again.headers["location"]
        assert client.post("/tips/decide", data={**form, "note_id": "nope", "action": "reject"}).status_code == 404
    assert location.read_text().splitlines() == ["header,text", "Hint,Check <both> sides"]
    with transaction(factory) as session:
        metadata = session.scalar(select(Agent.task_metadata).join(Unit, Unit.agent_id == Agent.id)
                                  .where(Unit.id == units["ann"])) or {}
    assert [(t["accepted"], t.get("removed"), t["decided_by"]) for t in metadata["tips"]] == [
        (True, False, "app:ada"), (False, True, "app:ada")]
    assert metadata["feedback"][0]["reviewed"] is True
