"""The mturk provider's ``wrap_crowd_source.js`` (what mephisto-task's React pages call) in Chromium,
opened by mturk-local's worker page: the worker and assignment from MTurk's URL parameters, none in
preview, and ``handleSubmitToProvider`` completing the assignment at ``turkSubmitTo``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mephisto_dist.providers import wrap_crowd_source
from tests.conftest import wait_for
from tests.mturk_local_process import client, external_question, mturk_local

pytestmark = pytest.mark.browser

PAGE = b"""<!doctype html><html><body><pre id="registration"></pre><button id="done">Done</button>
<script src="/wrap_crowd_source.js"></script>
<script>
document.getElementById("registration").textContent = JSON.stringify(
  {agent: getAgentRegistration(), assignment: getAssignmentId(), worker: getWorkerName()});
document.getElementById("done").onclick = function () { handleSubmitToProvider({answer: 1}); };
</script></body></html>"""


@pytest.fixture()
def react_like_page() -> Iterator[str]:
    script = wrap_crowd_source("mturk_sandbox").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = (script, "text/javascript") if self.path.startswith("/wrap") else (PAGE, "text/html")
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.system
def test_wrap_crowd_source_reads_mturks_parameters_and_submits_there(
        tmp_path: Path, react_like_page: str, browser: Any) -> None:
    with mturk_local(tmp_path / "state.sqlite3", tmp_path / "log") as url:
        mturk = client(url)
        hit_id = mturk.create_hit(Title="React task", Description="d", Reward="0.10", AssignmentDurationInSeconds=600,
                                  LifetimeInSeconds=600, Question=external_question(react_like_page))["HIT"]["HITId"]
        page = browser.new_page()
        page.goto(f"{url}/projects/{hit_id}?workerId=A1REACT")
        frame = page.frame_locator("#task")
        preview = json.loads(frame.locator("#registration").inner_text())
        assert preview["assignment"] is None and preview["worker"] is None
        page.click("#accept")
        frame.locator("#registration", has_text="A1REACT").wait_for()
        shown = json.loads(frame.locator("#registration").inner_text())
        assignment_id = shown["assignment"]
        assert shown["agent"] == {"worker_name": "A1REACT", "worker_id": "A1REACT", "assignment_id": assignment_id,
                                  "agent_registration_id": f"{assignment_id}-A1REACT", "hit_id": hit_id,
                                  "provider_type": "mturk"}
        frame.locator("#done").click()
        page.wait_for_selector("#notice")
        done = wait_for(lambda: mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"], message="submitted")
        assert (done[0]["AssignmentId"], done[0]["AssignmentStatus"]) == (assignment_id, "Submitted")
