"""A task's own review bundle (``mephisto.blueprint.task_source_review``, issue 22): stored with the run
when it is created, it renders each submission on the review app's pages (in a frame, with the data
contract of Mephisto's TaskReview client: ``REVIEW_DATA`` in, ``IFRAME_DATA`` height out) and is served at
Mephisto's routes (``/api/units/<id>/review.html``, ``/units/<id>/bundle.js``); a run without one shows
inputs and outputs as before. In Chromium against the real ``review-app`` process; the task folder is
gone before the app starts, so the bundle can only come from the run's stored bundle."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun, Unit
from mephisto_dist.db.transitions import move_units
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.runs.bundles import store_bundle
from mephisto_dist.runs.preparation import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from mephisto_dist.storage import open_storage
from mephisto_dist.storage.bundle_cache import BundleCache
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration, RunContext
from tests.browser import wait_for
from tests.factories import now
from tests.system import make_runtime
from tests.taskdirs import write_task_dir
from tests.test_review_app import SCREENSHOTS, review_app  # noqa: F401  (the app process, a fixture)

# What a review bundle built the way Mephisto's guide says does (its reviewapp.jsx, without React):
# render nothing until the data message comes, render it into #app, then tell the page its height.
REVIEW_BUNDLE = """\
(function () {
  var app = document.getElementById("app");
  window.onmessage = function (e) {
    var data = JSON.parse(e.data)["REVIEW_DATA"];
    app.innerHTML = "";
    var title = document.createElement("h2");
    title.textContent = "Sentence: " + data.inputs.sentence;
    var answer = document.createElement("p");
    answer.className = "answer";
    answer.textContent = "Rated " + data.outputs.rating + " by the worker";
    var tall = document.createElement("div");
    tall.style.height = "240px";
    tall.style.background = "#e8f0fb";
    tall.textContent = "rendered by the task's review bundle";
    app.append(title, answer, tall);
    window.top.postMessage(JSON.stringify({IFRAME_DATA: {height: app.offsetHeight + 16}}), "*");
  };
})();
"""


def review_task_dir(root: Path, *, with_review: bool = True, built: bool = True) -> Path:
    task_dir = write_task_dir(root, rows=2, task_name="review-bundle-task", architect="mock")
    conf = task_dir / "hydra_configs" / "conf" / "example.yaml"
    if with_review:
        conf.write_text(conf.read_text().replace(
            "    task_source: ${task_dir}/server_files/task.html\n",
            "    task_source: ${task_dir}/server_files/task.html\n"
            "    task_source_review: ${task_dir}/webapp/build/bundle.review.js\n"))
    if built:
        (task_dir / "webapp" / "build").mkdir(parents=True)
        (task_dir / "webapp" / "build" / "bundle.review.js").write_text(REVIEW_BUNDLE)
    return task_dir


def test_the_review_bundle_travels_in_the_runs_bundle(tmp_path: Path) -> None:
    build, task = tmp_path / "build", tmp_path / "task"
    build.mkdir()
    task.mkdir()
    (build / "task.html").write_text("<p>${x}</p>")
    review = tmp_path / "bundle.review.js"
    review.write_text(REVIEW_BUNDLE)
    storage = open_storage(f"file://{tmp_path / 'store'}")
    with_review = store_bundle(storage, build, task, review)
    without = store_bundle(storage, build, task)
    assert with_review != without
    local = BundleCache(storage, tmp_path / "cache").local(with_review)
    assert (local / "review" / "bundle.review.js").read_text() == REVIEW_BUNDLE
    with tarfile.open(storage.locator(without)) as tar:
        assert not any(name.startswith("review/") for name in tar.getnames())


def submitted_runs(runtime: Runtime, root: Path) -> dict[str, tuple[int, int]]:
    """Two runs, each with one submitted unit: ``review`` has a built review bundle, ``plain`` has none
    (its config names one that was never built). Their task folders are removed afterwards."""
    made: dict[str, tuple[int, int]] = {}
    for name, built in (("review", True), ("plain", False)):
        task_dir = review_task_dir(root / name, built=built)
        run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
        factory = runtime.sessions
        with transaction(factory) as session:
            run = session.get(TaskRun, run_id)
            assert run is not None
            ids = list(session.scalars(select(Unit.id).where(Unit.task_run_id == run_id)))
            move_units(session, ids, UnitStatus.CREATED, UnitStatus.LAUNCHED, now=now())
            context = RunContext(run_id, run.task_id, "review-bundle-task", "mock", run.build_dir, run.config)
            reg = Registration.from_request({"provider_data": {"worker_name": f"{name}-worker",
                                                               "assignment_id": f"{name}-1"}})
            details = claims.register_agent(session, context, reg, now=now())
            assert details.agent_id
            claims.submit_task(session, context, details.agent_id, {"rating": "5"}, now=now())
            unit_id = session.scalar(select(Unit.id).where(Unit.agent_id == details.agent_id))
            assert unit_id is not None
        made[name] = (run_id, unit_id)
        shutil.rmtree(task_dir)
    return made


@pytest.fixture
def runs(tmp_path: Path, engine: Engine, redis_url: str) -> Iterator[dict[str, tuple[int, int]]]:
    # The review app's data directory (tests.test_review_app.review_app): the same storage.
    runtime = make_runtime(tmp_path / "data", engine.url.render_as_string(hide_password=False), redis_url)
    try:
        yield submitted_runs(runtime, tmp_path / "tasks")
    finally:
        runtime.close()


def sign_in(page: Any, url: str, next_path: str) -> None:
    page.goto(f"{url}{next_path}")
    page.fill("input[name=reviewer]", "ada")
    page.fill("input[name=password]", "correct-horse")
    page.click("form.login button")
    page.wait_for_url(f"{url}{next_path}")


@pytest.mark.system
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_submission_is_shown_by_the_tasks_review_bundle(review_app: tuple[str, Engine],  # noqa: F811
                                                         runs: dict[str, tuple[int, int]], browser: Any) -> None:
    url, _ = review_app
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    run_id, unit_id = runs["review"]
    plain_run, plain_unit = runs["plain"]
    page = browser.new_page()
    sign_in(page, url, f"/runs/{run_id}/review")

    frame = page.frame_locator(f"#u{unit_id} iframe.review-bundle")
    frame.locator(".answer").wait_for(timeout=15_000)
    assert frame.locator(".answer").inner_text() == "Rated 5 by the worker"
    assert frame.locator("h2").inner_text() == "Sentence: sentence number 0"
    # The bundle said how tall it is; the page sized the frame to it.
    wait_for(lambda: int(page.get_attribute(f"#u{unit_id} iframe.review-bundle", "height") or 0) > 240, 10,
             "the frame to take the bundle's height")
    assert page.locator(f"#u{unit_id} details pre").count() == 2  # inputs and outputs, folded under it
    page.screenshot(path=str(SCREENSHOTS / "review-bundle.png"), full_page=True)

    # The unit's own page renders it the same way, and decides it.
    page.goto(f"{url}/units/{unit_id}")
    page.frame_locator("iframe.review-bundle").locator(".answer").wait_for(timeout=15_000)
    page.locator("input[name=reason]").fill("good")
    with page.expect_navigation():
        page.click("button[value=approve]")
    assert f"approve: unit(s) {unit_id}" in page.inner_text(".said")
    assert page.locator("button[value=approve]").count() == 0  # decided: no form any more

    # A run whose review bundle was never built: inputs and outputs, no frame.
    page.goto(f"{url}/runs/{plain_run}/review")
    assert page.locator("iframe").count() == 0
    assert '"rating": "5"' in page.inner_text(f"#u{plain_unit}")

    # Mephisto's routes, as its TaskReview client uses them, with the session's cookie.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=url, cookies=cookies) as client:
        details = client.get("/api/units/details", params={"unit_ids": f"{unit_id},{plain_unit}"}).json()["units"]
        # As Mephisto says it: the config names a review bundle (built or not).
        assert [d["has_task_source_review"] for d in details] == [True, True]
        assert details[0]["prepared_inputs"]["sentence"] == "sentence number 0"
        html = client.get(f"/api/units/{unit_id}/review.html")
        assert html.status_code == 200 and f'<script src="/units/{unit_id}/bundle.js">' in html.text
        assert "frame-ancestors 'self'" in html.headers["content-security-policy"]
        bundle = client.get(f"/units/{unit_id}/bundle.js")
        assert bundle.status_code == 200 and bundle.text == REVIEW_BUNDLE
        assert bundle.headers["content-type"].startswith("text/javascript")
        missing = client.get(f"/units/{plain_unit}/bundle.js")
        assert missing.status_code == 404 and "has no review bundle" in missing.text
        assert client.get("/units/999999/bundle.js").status_code == 404
    assert httpx.get(f"{url}/units/{unit_id}/bundle.js", follow_redirects=False).status_code == 303  # signed out
