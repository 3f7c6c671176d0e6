"""The TaskReview client's face in Chromium against the real ``review-app --mephisto-client`` process: a
client build's page runs under the app's CSP (its inline script allowed by hash), and from it a JSON
decision goes through; another site's page, in the same signed-in browser, can neither post JSON (no CORS
permission) nor a form (the SameSite=Strict cookie stays home), so nothing is decided."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Unit, UnitReview
from tests.browser import free_port, wait_for
from tests.test_review_app import REVIEWERS, _answers, app_env, submitted_run

pytestmark = pytest.mark.system

INDEX = ('<!doctype html><html><head><script>window.inlineRan = true;</script>'
         '<script defer src="/static/js/main.1.js"></script></head><body><div id="root"></div></body></html>')
MAIN = "document.getElementById('root').textContent = 'TaskReview ' + (window.inlineRan ? 'inline ok' : 'no inline');"


@pytest.fixture
def client_app(tmp_path: Path, engine: Engine) -> Iterator[str]:
    build = tmp_path / "build"
    (build / "static" / "js").mkdir(parents=True)
    (build / "index.html").write_text(INDEX)
    (build / "static" / "js" / "main.1.js").write_text(MAIN)
    port = free_port()
    log = (tmp_path / "review-app.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mephisto_dist.cli.app", "review-app", "--port", str(port), "--mephisto-client",
         str(build)],
        env=app_env(engine.url.render_as_string(hide_password=False), tmp_path / "data",
                    MEPHISTO_DIST_REVIEW_USERS=REVIEWERS, MEPHISTO_DIST_REVIEW_SECRET="s" * 40),
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), 30, "the review app never answered")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def reviewed(engine: Engine) -> list[tuple[int, str, str | None]]:
    with transaction(make_sessionmaker(engine)) as session:
        return [(int(u), str(s), b) for u, s, b in session.execute(
            select(UnitReview.unit_id, UnitReview.status, UnitReview.decided_by).order_by(UnitReview.id))]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_client_decides_from_its_own_page_and_another_site_cannot(client_app: str, engine: Engine,
                                                                      browser: Any) -> None:
    url = client_app
    _, units = submitted_run(make_sessionmaker(engine))
    context = browser.new_context()
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(f"{url}/tasks")
    assert page.url.startswith(f"{url}/login")
    page.fill("input[name=reviewer]", "ada")
    page.fill("input[name=password]", "correct-horse")
    page.click("form.login button")
    page.wait_for_url(f"{url}/tasks")
    page.wait_for_function("document.getElementById('root').textContent.startsWith('TaskReview')")
    assert page.inner_text("#root") == "TaskReview inline ok" and violations == []

    answer = page.evaluate("""async (unit) => {
        const r = await fetch('/api/units/approve', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                      body: JSON.stringify({unit_ids: [String(unit)]})});
        return [r.status, await r.json()];
    }""", units["ann"])
    assert answer == [200, {}]
    assert reviewed(engine) == [(units["ann"], "accepted", "app:ada")]

    # Another site, in the same signed-in browser.
    evil = context.new_page()
    evil.route("http://evil.example/**", lambda route: route.fulfill(
        status=200, content_type="text/html",
        body=f'<form method="post" action="{url}/api/units/approve" enctype="text/plain">'
             f'<input name=\'{{"unit_ids": ["{units["bob"]}"], "x": "\' value=\'"}}\'></form>'))
    evil.goto("http://evil.example/")
    fetched = evil.evaluate("""async ([url, unit]) => {
        try {
            const r = await fetch(url + '/api/units/approve', {method: 'POST', credentials: 'include',
                headers: {'Content-Type': 'application/json'}, body: JSON.stringify({unit_ids: [String(unit)]})});
            return 'answered ' + r.status;
        } catch (error) { return 'refused'; }
    }""", [url, units["bob"]])
    assert fetched == "refused"  # the CORS preflight got no permission: the request was never sent
    with evil.expect_navigation():
        evil.evaluate("document.forms[0].submit()")
    assert "sign in first" in evil.content()  # the SameSite=Strict cookie stayed home
    assert reviewed(engine) == [(units["ann"], "accepted", "app:ada")]
    with transaction(make_sessionmaker(engine)) as session:
        assert session.scalar(select(Unit.status).where(Unit.id == units["bob"])) == "completed"
    context.close()
