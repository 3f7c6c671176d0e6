"""End to end, as a new user does it: ``mephisto-dist run`` on the embedded default, workers in headless
Chromium, then ``mephisto-dist export``.

Real processes only: the CLI starts its own redis-server, Celery worker, beat and web server in a
temporary data directory. Debian's chromium drives the worker page (never ``playwright install``).
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = REPO / "examples" / "simple_static_task"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_S = 30.0
PAGE_S = 15.0
EXIT_S = 30.0
STOP_S = 10.0

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float, message: str,
             interval_s: float = 0.05) -> T:
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user_env(data_dir: Path) -> dict[str, str]:
    """The environment of a new user: only a private data dir, no shared Redis or database."""
    env = dict(os.environ)
    env.pop("MEPHISTO_DIST_REDIS_URL", None)
    env.pop("MEPHISTO_DIST_DATABASE_URL", None)
    env["MEPHISTO_DIST_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def csv_rows() -> list[dict[str, str]]:
    with (TASK_DIR / "data.csv").open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), children first found first."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces; the fields after the closing parenthesis do not.
        fields = stat[stat.rfind(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


@dataclass
class RunProcess:
    """``mephisto-dist run`` as a subprocess, its output read by a thread."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def _drain(self) -> bool:
        """Move what the reader got into ``lines``; False once the output has ended."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return True
            if line is None:
                self._queue.put(None)
                return False
            self.lines.append(line)

    @property
    def output(self) -> str:
        self._drain()
        return "".join(self.lines)

    def wait_for_line(self, needle: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            open_ = self._drain()
            for line in self.lines:
                if needle in line:
                    return line.strip()
            if not open_ or self.process.poll() is not None:
                time.sleep(0.2)
                self._drain()
                raise AssertionError(f"mephisto-dist run exited (code {self.process.poll()}) before "
                                     f"printing {needle!r}; output:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"no {needle!r} within {timeout_s}s; output:\n{self.output}")

    def wait_exit(self, timeout_s: float) -> int:
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mephisto-dist run did not exit within {timeout_s}s; output:\n"
                                 f"{self.output}") from None
        wait_for(lambda: not self._drain(), 5.0, "the end of the run's output")
        return code

    def stop(self) -> None:
        """Ctrl-C, then SIGKILL after a deadline; also kill any process it left behind, by pid."""
        family = _descendants(self.process.pid)
        # Ctrl-C once drains (waits for units held by workers), twice forces; then SIGKILL.
        for attempt in (signal.SIGINT, signal.SIGINT, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            family += [pid for pid in _descendants(self.process.pid) if pid not in family]
            self.process.send_signal(attempt)
            try:
                self.process.wait(STOP_S if attempt == signal.SIGINT else 5)
            except subprocess.TimeoutExpired:
                pass
        family += [pid for pid in _descendants(self.process.pid) if pid not in family]
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in family:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[[str], tuple[RunProcess, str, int]]]:
    """Start ``mephisto-dist run examples/simple_static_task`` on a free port; yield (run, worker url, port)."""
    started: list[RunProcess] = []

    def start(task_name: str) -> tuple[RunProcess, str, int]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(TASK_DIR),
             f"mephisto.architect.port={port}", f"mephisto.task.task_name={task_name}"],
            cwd=REPO, env=user_env(tmp_path / "data"), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        run = RunProcess(process)
        started.append(run)
        url = run.wait_for_line(f"http://localhost:{port}/?worker_id=", STARTUP_S)
        # The URLs are printed before the Celery worker has launched the units (about 1.5 s later); a
        # worker opening one at once is told "There is no unit available". Wait, as the user watching
        # the progress display would, until the run shows its units launched.
        run.wait_for_line("created=0 launched=3 ", STARTUP_S)
        return run, url, port

    try:
        yield start
    finally:
        for run in started:
            run.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def open_task(browser: Any, port: int, worker: str, assignment: str) -> Any:
    """A fresh page (own context) opened as a worker, waited on until the task form shows."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(PAGE_S * 1000)
    page.goto(f"http://localhost:{port}/?worker_id={worker}&assignment_id={assignment}")
    try:
        page.wait_for_selector("#task-form:not([hidden]) #sentence")
    except Exception as error:
        status = page.locator("#shell-status").inner_text(timeout=1000)
        raise AssertionError(f"the task did not show for {worker}; the page says {status!r}") from error
    return page


def shown_row(page: Any, rows: list[dict[str, str]]) -> dict[str, str]:
    sentence = page.locator("#sentence").inner_text().strip()
    matches = [row for row in rows if row["sentence"] == sentence]
    assert matches, f"the page shows {sentence!r}, not a sentence of data.csv"
    return matches[0]


def submit_and_confirm(page: Any) -> None:
    page.click("#submit-button")
    page.wait_for_selector("#shell-status.done")
    assert "Thank you" in page.locator("#shell-status").inner_text()
    assert page.locator("#task-form").is_hidden()


def run_export(tmp_path: Path, task_name: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "mephisto_dist.cli.app", "export", "--task-name", task_name, "--format", "jsonl"],
        check=False, cwd=REPO, env=user_env(tmp_path / "data"), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, f"export failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


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
