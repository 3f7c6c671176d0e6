"""End to end, as a new user does it: ``mephisto-dist run`` on the embedded default, workers in headless
Chromium, then ``mephisto-dist export``.

Real processes only: the CLI starts its own redis-server, Celery worker, beat and web server in a
temporary data directory. Debian's chromium drives the worker page (never ``playwright install``).
"""

from __future__ import annotations

import csv
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import (
    EXIT_S,
    PAGE_S,
    REPO,
    RunProcess,
    open_page,
    run_export,
    run_starter,
    submit_and_confirm,
)

pytestmark = [pytest.mark.browser, pytest.mark.system]

TASK_DIR = REPO / "examples" / "simple_static_task"
def csv_rows() -> list[dict[str, str]]:
    with (TASK_DIR / "data.csv").open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[[str], tuple[RunProcess, str, int]]]:
    """Start ``mephisto-dist run examples/simple_static_task`` on a free port; yield (run, url, port)."""
    with run_starter(tmp_path, TASK_DIR, "created=0 launched=3 ") as start:
        yield start


def open_task(browser: Any, port: int, worker: str, assignment: str) -> Any:
    """A fresh page (own context) opened as a worker, waited on until the task form shows."""
    return open_page(browser, port, worker, assignment, "#task-form:not([hidden]) #sentence", "the task")


def shown_row(page: Any, rows: list[dict[str, str]]) -> dict[str, str]:
    sentence = page.locator("#sentence").inner_text().strip()
    matches = [row for row in rows if row["sentence"] == sentence]
    assert matches, f"the page shows {sentence!r}, not a sentence of data.csv"
    return matches[0]


def test_new_user_runs_the_example_in_a_browser_and_exports(
    tmp_path: Path, start_run: Callable[[str], tuple[RunProcess, str, int]], browser: Any,
) -> None:
    rows = csv_rows()
    assert len(rows) == 3
    task_name = f"e2e-{uuid.uuid4().hex[:8]}"
    run, url, port = start_run(task_name)
    assert url.startswith(f"http://localhost:{port}/?worker_id=") and "assignment_id=" in url

    # The first worker: a CSV row filled in, the inline script ran, the task's own CSS applied.
    page = open_task(browser, port, "browser-worker-1", "a1")
    row = shown_row(page, rows)
    task_text = page.locator("#task-content").inner_text()
    assert "${" not in task_text and "${" not in page.content()
    assert f"Source: {row['source']}" in task_text
    assert page.locator("input[name=sentence_id]").input_value() == row["sentence_id"]
    words = len(row["sentence"].split())
    page.wait_for_function("document.getElementById('counter').textContent.length > 0")
    assert page.locator("#counter").inner_text().strip() == f"{words} words"
    border = page.locator("#sentence").evaluate("e => getComputedStyle(e).borderLeftWidth")
    assert border == "4px", "task.css from extra_source_dir did not apply"
    assert page.title() == "Rate how natural a sentence sounds"

    comment = "Reads naturally to me; tested from a real browser."
    upload = tmp_path / "evidence.txt"
    upload_bytes = b"evidence from browser-worker-1\n\x00\x01binary tail\n"
    upload.write_bytes(upload_bytes)
    page.select_option("#rating", "4")
    page.fill("#comment", comment)
    page.set_input_files("#evidence", str(upload))
    page.screenshot(path=str(tmp_path / "e2e-task.png"), full_page=True)
    submit_and_confirm(page)
    page.screenshot(path=str(tmp_path / "e2e-done.png"), full_page=True)
    shutil.copy(tmp_path / "e2e-task.png", "/tmp/e2e-task.png")
    shutil.copy(tmp_path / "e2e-done.png", "/tmp/e2e-done.png")
    page.context.close()

    # The two other units, each by another worker; the file is optional.
    seen = {row["sentence_id"]}
    for number, rating in ((2, "2"), (3, "5")):
        other = open_task(browser, port, f"browser-worker-{number}", f"a{number}")
        seen.add(shown_row(other, rows)["sentence_id"])
        other.select_option("#rating", rating)
        submit_and_confirm(other)
        other.context.close()
    assert seen == {r["sentence_id"] for r in rows}, "each worker should have got a different row"

    # With every unit submitted the command ends by itself.
    code = run.wait_exit(EXIT_S)
    assert code == 0, f"mephisto-dist run exited with {code}; output:\n{run.output}"
    last_line = run.output.strip().splitlines()[-1]
    assert re.match(r"task run \d+ (is done|finished)\b.*\b3 completed\b", last_line), run.output

    records = run_export(tmp_path, task_name)
    assert len(records) == 3, records
    by_worker = {r["worker_name"]: r for r in records}
    assert set(by_worker) == {"browser-worker-1", "browser-worker-2", "browser-worker-3"}
    for record in records:
        assert record["status"] == "completed"
        assert record["task_name"] == task_name
        assert record["start_time"] and record["end_time"]
        inputs = record["data"]["inputs"]
        assert {k: inputs[k] for k in ("sentence_id", "sentence", "source")} in rows
        assert inputs["html"] == "rate_sentence.html"
        assert record["data"]["outputs"]["sentence_id"] == inputs["sentence_id"]

    first = by_worker["browser-worker-1"]
    assert first["data"]["inputs"]["sentence_id"] == row["sentence_id"]
    outputs = first["data"]["outputs"]
    assert outputs["rating"] == "4"
    assert outputs["comment"] == comment
    stored = outputs["evidence"]
    assert stored["filename"] == "evidence.txt"
    assert stored["size"] == len(upload_bytes)
    assert Path(stored["path"]).is_file()
    assert Path(stored["path"]).read_bytes() == upload_bytes
    assert Path(stored["path"]).resolve().is_relative_to((tmp_path / "data").resolve())
    assert by_worker["browser-worker-2"]["data"]["outputs"]["rating"] == "2"
    assert by_worker["browser-worker-3"]["data"]["outputs"]["rating"] == "5"
    assert "evidence" not in by_worker["browser-worker-2"]["data"]["outputs"]


def test_preview_and_a_worker_who_already_submitted(
    tmp_path: Path, start_run: Callable[[str], tuple[RunProcess, str, int]], browser: Any,
) -> None:
    run, _, port = start_run(f"e2e-preview-{uuid.uuid4().hex[:8]}")
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(PAGE_S * 1000)

    # Without a worker id: the preview HTML of the task folder, not the task.
    page.goto(f"http://localhost:{port}/")
    page.wait_for_selector("#preview-content:not([hidden]) h2")
    preview = page.locator("#preview-content").inner_text()
    assert "Preview: rate how natural a sentence sounds" in preview
    assert "You will read one sentence and rate it from 1 (clearly unnatural)" in preview
    assert page.locator("#task-form").is_hidden()

    # A worker submits, then opens the same link again: refused with the reason.
    page = open_task(browser, port, "browser-again", "a1")
    page.select_option("#rating", "3")
    submit_and_confirm(page)
    page.context.close()
    again = open_task_refused(browser, port, "browser-again", "a1")
    assert again == "You have already submitted this unit."
    assert run.process.poll() is None, run.output
    context.close()


def open_task_refused(browser: Any, port: int, worker: str, assignment: str) -> str:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(PAGE_S * 1000)
    page.goto(f"http://localhost:{port}/?worker_id={worker}&assignment_id={assignment}")
    page.wait_for_selector("#shell-status.error")
    assert page.locator("#task-form").is_hidden()
    text = str(page.locator("#shell-status").inner_text()).strip()
    context.close()
    return text
