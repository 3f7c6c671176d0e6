"""examples/react_task in a real browser: its run_task.py builds the React webapp (mephisto-task 2.0.4 from
the npm registry) through build_custom_bundle, the page speaks Mephisto's router protocol through
mephisto-task's useMephistoTask hook, and the answers are in export."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mephisto_dist.compat.bundle import bundle_is_current
from tests.browser import REPO, RunProcess, run_export, run_starter, user_env, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.system]

EXAMPLE = REPO / "examples" / "react_task"
PAGE_S = 30.0
BUILD_S = 300.0


@pytest.fixture(scope="module")
def react_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example without node_modules or a build, built once per module by launching it:
    its run_task.py calls build_custom_bundle (npm install from the registry, then npm run dev)."""
    target = tmp_path_factory.mktemp("react") / "react_task"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("node_modules", "build"))
    bundle = target / "webapp" / "build" / "bundle.js"
    assert not bundle.exists()
    with run_starter(tmp_path_factory.mktemp("build"), target, "created=0 launched=2 ", BUILD_S) as start:
        run, _, _ = start(f"react-build-{uuid.uuid4().hex[:8]}")
        assert "building the webapp bundle" in run.output
    assert bundle.is_file() and bundle_is_current(target / "webapp", bundle)
    return target


@pytest.fixture
def start_run(tmp_path: Path, react_task: Path) -> Iterator[Callable[..., tuple[RunProcess, int]]]:
    with run_starter(tmp_path, react_task, "created=0 launched=2 ") as start:
        def start_and_port(task_name: str) -> tuple[RunProcess, int]:
            run, _, port = start(task_name)
            return run, port

        yield start_and_port


def open_react(browser: Any, port: int, worker: str, assignment: str, ready: str,
               console: list[str] | None = None) -> Any:
    """The page opened as ``worker``, waited on until ``ready`` shows; what it logs to the browser's console
    is appended to ``console``."""
    context = browser.new_context()
    page = context.new_page()
    if console is not None:
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.set_default_timeout(PAGE_S * 1000)
    page.goto(f"http://localhost:{port}/?worker_id={worker}&assignment_id={assignment}")
    page.wait_for_selector(ready)
    return page


def test_a_worker_gets_the_data_leaves_a_tip_submits_and_it_is_exported(
    tmp_path: Path, react_task: Path, start_run: Callable[..., tuple[RunProcess, int]], browser: Any,
) -> None:
    task_name = f"react-{uuid.uuid4().hex[:8]}"
    run, port = start_run(task_name)
    assert "building the webapp bundle" not in run.output  # built already, and nothing changed since

    console: list[str] = []
    page = open_react(browser, port, "alice", "1", "#sentence", console)
    assert page.locator("#sentence").inner_text() == "This text is good text!"
    # mephisto-task compares the version the server reports with its own: they are the same.
    assert any("agent_details" in line for line in console), console  # the hook's own log: we listen
    assert not [line for line in console if "mismatch" in line.lower()], console
    page.fill("#note", "Read the whole sentence first.")
    page.click("#send-tip")
    page.wait_for_selector("#note-sent")
    page.click("#good")
    page.wait_for_selector("#done")

    second = open_react(browser, port, "bob", "2", "#sentence")
    assert second.locator("#sentence").inner_text() == "This text is bad text!"
    second.click("#bad")
    second.wait_for_selector("#done")
    assert run.wait_exit(60) == 0, run.output

    records = {r["worker_name"]: r for r in run_export(tmp_path, task_name)}
    assert records["alice"]["data"] == {"inputs": {"text": "This text is good text!"},
                                        "outputs": {"rating": "good"}}
    assert records["bob"]["data"]["outputs"] == {"rating": "bad"}
    tips = records["alice"]["metadata"]["tips"]
    assert [(t["text"], t["accepted"]) for t in tips] == [("Read the whole sentence first.", False)]
    assert records["bob"]["metadata"] == {}


def test_onboarding_pass_and_fail(tmp_path: Path, react_task: Path, browser: Any) -> None:
    with run_starter(tmp_path, react_task, "created=0 launched=2 ") as start:
        _, _, port = start(f"react-onb-{uuid.uuid4().hex[:8]}", "conf=onboarding_example")
        failing = open_react(browser, port, "carol", "1", "#onboarding")
        failing.click("#onboarding-no")
        failing.wait_for_selector("#blocked")
        assert "did not pass the qualification" in failing.locator("#blocked").inner_text()

        passing = open_react(browser, port, "dave", "2", "#onboarding")
        passing.click("#onboarding-yes")
        passing.wait_for_selector("#sentence")  # the real unit follows in the same page
        assert passing.locator("#sentence").inner_text() == "This text is good text!"

        again = open_react(browser, port, "carol", "3", "#blocked")
        assert "did not pass the qualification" in again.locator("#blocked").inner_text()


def test_build_custom_bundle_without_npm_is_one_line(tmp_path: Path) -> None:
    task_dir = tmp_path / "react_task"
    shutil.copytree(EXAMPLE, task_dir, ignore=shutil.ignore_patterns("node_modules", "build"))
    env = user_env(tmp_path / "data")
    env["PATH"] = str(Path(sys.executable).parent)
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "build_custom_bundle needs node, which is not on PATH" in lines[0], result.stderr


def test_screening_then_real_units(tmp_path: Path, react_task: Path, browser: Any) -> None:
    """Mephisto's screening example: a new worker first gets a unit made from the script's generator;
    the script's validator (on Celery) passes or blocks them; a passed worker then gets real units."""
    with run_starter(tmp_path, react_task, "created=0 launched=2 ") as start:
        _, _, port = start(f"react-scr-{uuid.uuid4().hex[:8]}", "conf=screening_example")
        eve = open_react(browser, port, "eve", "1", "#sentence")
        assert eve.locator("#sentence").inner_text() == "SCREENING UNIT: press the Bad button"
        eve.click("#bad")  # the right answer
        eve.wait_for_selector("#done")
        frank = open_react(browser, port, "frank", "2", "#sentence")
        assert frank.locator("#sentence").inner_text() == "SCREENING UNIT: press the Bad button"
        frank.click("#good")
        frank.wait_for_selector("#done")

        def next_page(worker: str, assignment: str) -> str:
            page = open_react(browser, port, worker, assignment, "#sentence, #blocked")
            if page.locator("#sentence").count():
                return str(page.locator("#sentence").inner_text())
            text = str(page.locator("#blocked").inner_text())
            page.context.close()
            return "" if "being checked" in text else text

        assert wait_for(lambda: next_page("eve", "3"), 30, "eve's screening to be validated") == \
            "This text is good text!"
        assert wait_for(lambda: next_page("frank", "4"), 30, "frank's screening to be validated") == \
            "You are not qualified to work on this task."
