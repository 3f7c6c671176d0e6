"""The browser end-to-end harness: ``mephisto-dist run`` as a real process on the embedded default, and
Debian's headless Chromium driven by Playwright (never ``playwright install``)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
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
                wait_for(lambda: not self._drain(), 5.0, "the end of the run's output")
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
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_S if attempt == signal.SIGINT else 5)
        family += [pid for pid in _descendants(self.process.pid) if pid not in family]
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in family:
            if _alive(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def run_starter(tmp_path: Path, task_dir: Path, launched: str, startup_s: float = STARTUP_S,
                ) -> Iterator[Callable[..., tuple[RunProcess, str, int]]]:
    """Start ``mephisto-dist run TASK_DIR`` on a free port with a task name of the caller's, as a new
    user would on the embedded default; yield a starter returning (run, worker URL, port). The runs are
    stopped (Ctrl-C, then force) when the block ends. ``launched`` is the progress line that says the
    units are claimable (for example ``created=0 launched=3 ``)."""
    started: list[RunProcess] = []

    def start(task_name: str, *args: str) -> tuple[RunProcess, str, int]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), *args,
             f"mephisto.architect.port={port}", f"mephisto.task.task_name={task_name}"],
            cwd=REPO, env=user_env(tmp_path / "data"), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        run = RunProcess(process)
        started.append(run)
        url = run.wait_for_line(f"http://localhost:{port}/?worker_id=", startup_s)
        # A worker opening a URL right away gets a unit; waiting for the progress line too makes the
        # test independent of how the output is ordered.
        run.wait_for_line(launched, startup_s)
        return run, url, port

    try:
        yield start
    finally:
        for run in started:
            run.stop()


def open_page(browser: Any, port: int, worker: str, assignment: str, ready: str, what: str) -> Any:
    """A fresh page (own context) opened as ``worker``, waited on until ``ready`` shows."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(PAGE_S * 1000)
    page.goto(f"http://localhost:{port}/?worker_id={worker}&assignment_id={assignment}")
    try:
        page.wait_for_selector(ready)
    except Exception as error:
        status = page.locator("#shell-status").inner_text(timeout=1000)
        raise AssertionError(f"{what} did not show for {worker}; the page says {status!r}") from error
    return page


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


