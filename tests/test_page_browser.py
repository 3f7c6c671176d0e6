"""The worker's page in a real browser around the edges: its title, no 404 for the icon, the access log
of the web process, and what the worker reads when they submit after the run was force-quit."""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import EXIT_S, PAGE_S, REPO, RunProcess, run_starter

pytestmark = [pytest.mark.browser, pytest.mark.system]

TASK_DIR = REPO / "examples" / "simple_static_task"
TITLE = "Rate how natural a sentence sounds"


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[[str], tuple[RunProcess, str, int]]]:
    with run_starter(tmp_path, TASK_DIR, "created=0 launched=3 ") as start:
        yield start


def test_title_icon_access_log_and_submitting_after_a_force_quit(
    start_run: Callable[[str], tuple[RunProcess, str, int]], browser: Any, tmp_path: Path,
) -> None:
    run, _, port = start_run(f"page-{uuid.uuid4().hex[:8]}")
    # The title is in the page as served, before any script runs.
    shell = httpx.get(f"http://localhost:{port}/?worker_id=w&assignment_id=a")
    assert f"<title>{TITLE}</title>" in shell.text

    failed: list[str] = []
    page = open_page_watching(browser, port, failed)
    assert page.title() == TITLE
    assert failed == [], f"requests that failed: {failed}"
    assert httpx.get(f"http://localhost:{port}/favicon.ico").status_code == 204

    log_dir = Path(re.search(r"logs in (\S+)", run.output).group(1))  # type: ignore[union-attr]
    web_log = (log_dir / "web.log").read_text()
    assert re.search(r"GET / 200 \d+\.\dms", web_log), web_log
    assert re.search(r"POST /request_agent 200 \d+\.\dms", web_log), web_log

    # Force quit (Ctrl-C twice) while the worker still has the task open.
    run.process.send_signal(signal.SIGINT)
    run.wait_for_line("Ctrl-C again to force quit", EXIT_S)
    run.process.send_signal(signal.SIGINT)
    run.wait_exit(EXIT_S)
    page.select_option("#rating", "4")
    page.click("#submit-button")
    page.wait_for_selector("#shell-status.error")
    said = page.locator("#shell-status").inner_text()
    assert "closed" in said and "not recorded" in said, said
    assert "Failed to fetch" not in said
    # Nothing left to send: the answers stay in sight, greyed, and there is no Submit to press.
    assert page.locator("#submit-button").is_hidden()
    assert page.locator("#rating").is_disabled()
    page.screenshot(path=str(tmp_path / "closed-after-force-quit.png"), full_page=True)
    page.context.close()


def open_page_watching(browser: Any, port: int, failed: list[str]) -> Any:
    """The task page, noting every request answered 4xx/5xx or that failed outright (favicon included:
    the browser asks for it on its own)."""
    context = browser.new_context()
    context.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    context.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
    page = context.new_page()
    page.set_default_timeout(PAGE_S * 1000)
    page.goto(f"http://localhost:{port}/?worker_id=page-worker&assignment_id=a1")
    page.wait_for_selector("#task-form:not([hidden]) #sentence")
    page.wait_for_load_state("networkidle")
    return page
