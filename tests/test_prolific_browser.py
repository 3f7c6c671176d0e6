"""One participant in Chromium on a ``prolific`` run, through prolific-local's participant page: take part
in the study, do the static task on our page (opened with Prolific's ids), submit, be sent back to
Prolific with the completion code; then approved with a bonus that is paid once, even when its call is
made again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import ProviderCall
from mephisto_dist.providers.requesters import register, save_keys
from mephisto_dist.review.decisions import Decision, decide, perform_call
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from tests.conftest import wait_for
from tests.prolific_local_process import FAKE_TOKEN, prolific_local
from tests.system import celery_worker, free_port, make_runtime, web_server
from tests.taskdirs import write_task_dir
from tests.test_prolific_e2e import AUTH, studies, submission, units

pytestmark = [pytest.mark.browser, pytest.mark.system]


def test_a_participant_does_a_prolific_study_in_the_browser(tmp_path: Path, redis_url: str, sqlite_url: str,
                                                            browser: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROLIFIC_CREDENTIALS_FILE", str(tmp_path / "prolific" / "credentials"))
    with prolific_local(tmp_path / "prolific.sqlite3", tmp_path / "prolific.log") as prolific:
        runtime = make_runtime(tmp_path / "data", sqlite_url, redis_url, DEPLOYMENT="e2e")
        save_keys("prolific", "lab", {"api_key": FAKE_TOKEN})
        with transaction(runtime.sessions) as session:
            register(session, "prolific", "lab", aws_profile="lab", endpoint_url=prolific, now=datetime.now(UTC))
        port = free_port()
        task_dir = write_task_dir(tmp_path, rows=1, port=port)
        run_id = create_run(runtime, prepare_run(task_dir, "example", [
            "mephisto/provider=prolific", "mephisto.provider.requester_name=lab"], check_port=False))
        logs = tmp_path / "logs"
        logs.mkdir()
        with celery_worker(runtime.settings, logs / "worker.log"), \
                web_server(runtime.settings, run_id, logs / "web.log", port=port):
            enqueue_launch(runtime, run_id)
            [study] = wait_for(lambda: [s for s in studies(prolific) if s["status"] == "ACTIVE"], timeout_s=60,
                               message="the study active")
            page = browser.new_page()
            page.goto(f"{prolific}/")
            page.fill("input[name=participant_id]", "PCHROMIUM1")
            page.click("text=Take part")
            page.locator("#sentence").wait_for(timeout=30_000)  # our task page, opened with Prolific's ids
            assert page.url.startswith(f"http://localhost:{port}/?participant_id=PCHROMIUM1&study_id={study['id']}")
            assert page.locator("#sentence").inner_text() == "sentence number 0"
            page.locator("select[name=rating]").select_option("5")
            page.locator("#submit-button").click()
            page.wait_for_selector("#completed", timeout=30_000)  # back at Prolific, with the code
            assert page.url.startswith(f"{prolific}/submissions/complete?cc=MD")
            submission_id = page.locator("#completed").get_attribute("data-submission")
            assert submission_id and submission(prolific, submission_id)["status"] == "AWAITING REVIEW"
            [unit] = wait_for(lambda: units(runtime, run_id, "completed"), message="the unit completed")

            with transaction(runtime.sessions) as session:
                calls = decide(session, unit, Decision.APPROVE, now=datetime.now(UTC), note="great",
                               bonus=0.75).call_ids
            for call_id in calls:
                perform_call(runtime.sessions, call_id)
            with transaction(runtime.sessions) as session:
                bonus = session.scalar(select(ProviderCall.id).where(ProviderCall.action == "bonus"))
                session.execute(update(ProviderCall).where(ProviderCall.id == bonus)
                                .values(status="pending", claimed_at=None))
            perform_call(runtime.sessions, int(bonus))  # made again, as after a crash before our record
            paid = submission(prolific, submission_id)
            assert paid["status"] == "APPROVED" and paid["bonus_payments"] == [75]
            assert httpx.get(f"{prolific}/local/stats").json()["BonusesPaid"] == 1
            assert httpx.get(f"{prolific}/api/v1/studies/{study['id']}/", headers=AUTH).json()["places_taken"] == 1
        runtime.close()
