"""One worker in Chromium on an ``mturk_sandbox`` run, through mturk-local's worker page: preview (our
page with ASSIGNMENT_ID_NOT_AVAILABLE), accept, the task in MTurk's frame, submit; our page then completes
the assignment at ``turkSubmitTo/mturk/externalSubmit`` and MTurk shows it submitted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.mturk_local_process import client, mturk_local
from tests.test_lifecycle_system import AttachedRun
from tests.test_mturk_run_cli import PROVIDER, aws_env, hits, register_lab

pytestmark = [pytest.mark.browser, pytest.mark.system]


def test_a_worker_does_an_mturk_hit_in_the_browser(tmp_path: Path, browser: Any) -> None:
    with mturk_local(tmp_path / "turk.sqlite3", tmp_path / "turk.log") as turk:
        register_lab(tmp_path, turk)
        mturk = client(turk)
        run = AttachedRun(tmp_path, *PROVIDER, rows=1, env=aws_env(tmp_path))
        try:
            run.wait_for_output(r"launched in", timeout_s=60)
            hit_id = wait_for(lambda: [h["HITId"] for h in hits(mturk)], timeout_s=60, message="the HIT")[0]
            page = browser.new_page()
            page.goto(f"{turk}/?workerId=A1CHROMIUM")
            page.click("text=Preview")
            frame = page.frame_locator("#task")
            frame.locator("#shell-status", has_text="Preview").wait_for(timeout=30_000)
            page.click("#accept")
            frame.locator("#sentence").wait_for(timeout=30_000)
            assert frame.locator("#sentence").inner_text() == "sentence number 0"
            assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Unassignable"
            frame.locator("select[name=rating]").select_option("5")
            frame.locator("#submit-button").click()
            page.wait_for_selector("#notice", timeout=30_000)
            assignments = mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"]
            assert [(a["WorkerId"], a["AssignmentStatus"]) for a in assignments] == [("A1CHROMIUM", "Submitted")]
            assert assignments[0]["AssignmentId"] in page.inner_text("#notice")
            assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Reviewable"
            assert run.wait(60) == 0, run.text()
        finally:
            run.kill()
