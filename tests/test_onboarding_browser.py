"""Onboarding in a real browser: ``mephisto-dist run examples/onboarding_task`` on the embedded default,
workers in headless Chromium (Debian's, never ``playwright install``), then ``mephisto-dist export``."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import (
    REPO,
    RunProcess,
    open_page,
    run_export,
    run_starter,
    submit_and_confirm,
)

pytestmark = [pytest.mark.browser, pytest.mark.system]

TASK_DIR = REPO / "examples" / "onboarding_task"
NOT_PASSED = "You did not pass the qualification for this task, so you cannot work on it."


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[[str], tuple[RunProcess, int]]]:
    """Start ``mephisto-dist run examples/onboarding_task`` on a free port; yield (run, port)."""
    with run_starter(tmp_path, TASK_DIR, "created=0 launched=3 ") as start:
        def start_and_port(task_name: str) -> tuple[RunProcess, int]:
            run, _, port = start(task_name)
            return run, port

        yield start_and_port


def open_onboarding(browser: Any, port: int, worker: str, assignment: str) -> Any:
    """A fresh page opened as ``worker``, waited on until the onboarding questions show."""
    return open_page(browser, port, worker, assignment, "#task-form:not([hidden]) input[name=natural]",
                     "onboarding")


def answer(page: Any, natural: str, top_rating: str) -> None:
    page.check(f"input[name=natural][value='{natural}']")
    page.check(f"input[name=top_rating][value='{top_rating}']")
    page.click("#submit-button")


def refusal(page: Any) -> str:
    page.wait_for_selector("#shell-status.error")
    assert page.locator("#task-form").is_hidden()
    return str(page.locator("#shell-status").inner_text()).strip()


def test_onboarding_fails_one_worker_and_lets_another_continue_to_the_task(
    tmp_path: Path, start_run: Callable[[str], tuple[RunProcess, int]], browser: Any,
) -> None:
    task_name = f"e2e-onboarding-{uuid.uuid4().hex[:8]}"
    run, port = start_run(task_name)

    # The onboarding page: the shell's notice, the page's own questions with its placeholders filled.
    page = open_onboarding(browser, port, "onboarding-fails", "a1")
    assert page.locator("#shell-notice").is_visible()
    text = page.locator("#task-content").inner_text()
    assert "Onboarding: two quick questions" in text
    assert "She went to the market yesterday." in text and "She have went to the market yesterday." in text
    assert "${" not in page.content()
    page.screenshot(path=str(tmp_path / "onboarding.png"), full_page=True)
    shutil.copy(tmp_path / "onboarding.png", "/tmp/onboarding-page.png")

    # A wrong answer: the not-qualified message, again after a reload and on any other assignment.
    answer(page, "a", "5")
    assert refusal(page) == NOT_PASSED
    assert page.locator("#shell-notice").is_hidden()
    page.screenshot(path="/tmp/onboarding-failed.png", full_page=True)
    page.reload()
    assert refusal(page) == NOT_PASSED
    page.goto(f"http://localhost:{port}/?worker_id=onboarding-fails&assignment_id=a2")
    assert refusal(page) == NOT_PASSED
    page.context.close()

    # Right answers: the task follows in the same page (no reload: the page's own marker survives).
    page = open_onboarding(browser, port, "onboarding-passes", "a3")
    page.evaluate("window.__samePage = 'yes'")
    answer(page, "b", "5")
    page.wait_for_selector("#task-form:not([hidden]) #sentence")
    assert page.evaluate("window.__samePage") == "yes"
    assert page.locator("#shell-notice").is_hidden()
    sentence = page.locator("#sentence").inner_text().strip()
    assert sentence and "${" not in page.content()
    page.screenshot(path="/tmp/onboarding-then-task.png", full_page=True)
    page.select_option("#rating", "4")
    page.fill("#comment", "after onboarding")
    submit_and_confirm(page)
    page.context.close()
    assert run.process.poll() is None, run.output

    records = run_export(tmp_path, task_name)
    assert [r["worker_name"] for r in records if r["status"] == "completed"] == ["onboarding-passes"]
    done = next(r for r in records if r["worker_name"] == "onboarding-passes")
    assert done["data"]["inputs"]["sentence"] == sentence
    assert done["data"]["outputs"]["rating"] == "4"
    assert done["data"]["outputs"]["comment"] == "after onboarding"
    assert "onboarding-fails" not in {r["worker_name"] for r in records if r["unit_id"] is not None}
    # Each worker's onboarding is a record of its own: the answers given and the outcome.
    tried = {r["worker_name"]: r for r in records if "onboarding" in r}
    assert {w: r["onboarding"] for w, r in tried.items()} == {"onboarding-fails": "failed",
                                                             "onboarding-passes": "passed"}
    assert tried["onboarding-fails"]["data"]["outputs"], "the failing answers are kept"
