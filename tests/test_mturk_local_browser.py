"""A worker at mturk-local in Chromium: the HIT list, preview, accept, the ExternalQuestion page in a
frame with MTurk's four parameters, its form posted to ``turkSubmitTo/mturk/externalSubmit``, and the
requester seeing the assignment submitted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.mturk_local_process import client, external_question, mturk_local

pytestmark = [pytest.mark.browser, pytest.mark.system]

TASK_PAGE = b"""<!doctype html><html><body>
<p id="params"></p>
<form id="work" method="post"><input type="hidden" name="assignmentId" id="aid">
<input name="rating" id="rating"><button id="send">Send</button></form>
<script>
const q = new URLSearchParams(location.search);
document.getElementById("params").textContent = [q.get("assignmentId"), q.get("hitId"), q.get("workerId")].join("|");
document.getElementById("aid").value = q.get("assignmentId");
if (q.get("assignmentId") === "ASSIGNMENT_ID_NOT_AVAILABLE") document.getElementById("send").disabled = true;
document.getElementById("work").action = q.get("turkSubmitTo") + "/mturk/externalSubmit";
</script></body></html>"""


@pytest.fixture()
def task_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(TASK_PAGE)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/task.html"
    server.shutdown()


def test_worker_previews_accepts_and_submits_in_the_browser(tmp_path: Path, task_server: str, browser: Any) -> None:
    with mturk_local(tmp_path / "state.sqlite3", tmp_path / "log") as url:
        mturk = client(url)
        hit_id = mturk.create_hit(Title="Rate a sentence", Description="One sentence", Reward="0.20",
                                  AssignmentDurationInSeconds=600, LifetimeInSeconds=600,
                                  Question=external_question(task_server))["HIT"]["HITId"]
        page = browser.new_page()
        page.goto(f"{url}/?workerId=A1BROWSER")
        page.click("text=Preview")
        frame = page.frame_locator("#task")
        assert frame.locator("#params").inner_text().startswith("ASSIGNMENT_ID_NOT_AVAILABLE|" + hit_id)
        assert frame.locator("#send").is_disabled()
        page.click("#accept")
        assignment_id = frame.locator("#params").inner_text().split("|")[0]
        assert frame.locator("#params").inner_text() == f"{assignment_id}|{hit_id}|A1BROWSER"
        assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Unassignable"
        frame.locator("#rating").fill("5")
        frame.locator("#send").click()
        page.wait_for_selector("#notice")
        assert assignment_id in page.inner_text("#notice")
        done = wait_for(lambda: mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"], message="submission")
        assert done[0]["AssignmentStatus"] == "Submitted" and done[0]["WorkerId"] == "A1BROWSER"
        assert "<FreeText>5</FreeText>" in done[0]["Answer"]
        assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Reviewable"


def test_worker_returns_a_hit_from_the_browser(tmp_path: Path, task_server: str, browser: Any) -> None:
    with mturk_local(tmp_path / "state.sqlite3", tmp_path / "log") as url:
        mturk = client(url)
        hit_id = mturk.create_hit(Title="Rate", Description="d", Reward="0.20", AssignmentDurationInSeconds=600,
                                  LifetimeInSeconds=600, Question=external_question(task_server))["HIT"]["HITId"]
        page = browser.new_page()
        page.goto(f"{url}/projects/{hit_id}?workerId=A1RETURNER")
        page.click("#accept")
        page.frame_locator("#task").locator("#params").wait_for()
        page.click("#return")
        page.wait_for_selector("#hits")
        assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Assignable"
