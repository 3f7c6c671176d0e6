"""A rerun on the same port right after a run that served real browsers: three Chromium workers hold units
of the first run at once, it is stopped with Ctrl-C while one of them is still working (the drain waits
for that page's submit, and a second run on the port meanwhile is refused), and the second run is started on the same port at once, the pages still open.
It starts (the browsers' connections left in TIME_WAIT do not make the port look taken); the first run's
pages, reloaded, are new visits given units of the second run; and each run keeps exactly its own work.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.browser import (
    EXIT_S,
    REPO,
    STARTUP_S,
    RunProcess,
    free_port,
    open_page,
    run_export,
    submit_and_confirm,
    user_env,
)

pytestmark = [pytest.mark.browser, pytest.mark.system]

TASK_DIR = REPO / "examples" / "simple_static_task"
TASK_FORM = "#task-form:not([hidden]) #sentence"


def start(tmp_path: Path, port: int, task_name: str) -> RunProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(TASK_DIR), f"mephisto.architect.port={port}",
         f"mephisto.task.task_name={task_name}"],
        cwd=REPO, env=user_env(tmp_path / "data"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, bufsize=1)
    run = RunProcess(process)
    run.wait_for_line(f"http://localhost:{port}/?worker_id=", STARTUP_S)
    run.wait_for_line("created=0 launched=3 ", STARTUP_S)
    return run


def answers(tmp_path: Path, task_name: str) -> set[tuple[str, str, str]]:
    return {(r["worker_name"], r["status"], r["data"]["outputs"]["rating"]) for r in run_export(tmp_path, task_name)}


def test_a_rerun_on_the_same_port_right_after_a_run_that_served_browsers_keeps_each_runs_work(
        tmp_path: Path, browser: Any) -> None:
    port = free_port()
    runs: list[RunProcess] = []
    try:
        first = start(tmp_path, port, "rerun-first")
        runs.append(first)
        pages = [open_page(browser, port, f"bw{n}", f"a{n}", TASK_FORM, "the first run's task") for n in (1, 2, 3)]
        for n, page in enumerate(pages, start=1):
            page.select_option("#rating", str(n))
        submit_and_confirm(pages[0])
        submit_and_confirm(pages[1])
        first.process.send_signal(signal.SIGINT)  # Ctrl-C once: the drain waits for the third page
        first.wait_for_line("waiting on 1 units in flight", STARTUP_S)
        # While that page works, a second run on the port is refused, naming the run it would take over.
        early = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "run", str(TASK_DIR),
                                f"mephisto.architect.port={port}", "mephisto.task.task_name=rerun-early"],
                               cwd=REPO, env=user_env(tmp_path / "data"), capture_output=True, text=True,
                               timeout=60, check=False)
        assert early.returncode == 2 and "open task run 1 (rerun-first)" in early.stderr, early
        submit_and_confirm(pages[2])
        assert first.wait_exit(EXIT_S) == 0, first.output

        second = start(tmp_path, port, "rerun-second")  # at once, the pages still open
        runs.append(second)
        for n, page in enumerate(pages, start=1):
            page.reload()
            page.wait_for_selector(TASK_FORM)  # a new visit: a unit of the second run
            page.select_option("#rating", str(n + 2))
            submit_and_confirm(page)
        assert second.wait_exit(EXIT_S) == 0, second.output
        assert "3 completed" in second.output.strip().splitlines()[-1], second.output
    finally:
        for run in runs:
            run.stop()
        for context in browser.contexts:
            context.close()
    assert answers(tmp_path, "rerun-first") == {("bw1", "completed", "1"), ("bw2", "completed", "2"),
                                                ("bw3", "completed", "3")}
    assert answers(tmp_path, "rerun-second") == {("bw1", "completed", "3"), ("bw2", "completed", "4"),
                                                 ("bw3", "completed", "5")}
