"""Mephisto's parlai_chat blueprint in Chromium, on its default page (bootstrap-chat's ChatApp over the live
channel): Mephisto v1.1.0's parlai_chat_task_demo, unchanged (tests/data/parlai_chat_task_demo), with its
onboarding world; two workers chat to the end, fill the world's form and press Done; the export has the
conversation. Then a world with one worker and a bot the world makes (tests/data/parlai_bot_task).

ParlAI is the test-only stand-in (tests/parlai_standin) on the processes' PYTHONPATH; joblib, which the demo's
world imports, is the real one (the test extra): the real ``parlai`` extra is 6 GB (see README, "ParlAI chat");
``MEPHISTO_DIST_TEST_REAL_PARLAI=1`` runs them with it instead, in an environment where it is installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import OnboardingAgent
from mephisto_dist.review.export import onboarding_records, unit_records
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import (
    ROOT,
    celery_beat,
    celery_worker,
    child_env,
    free_port,
    make_runtime,
    runner_worker,
    web_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.system]

DEMO = ROOT / "tests" / "data" / "parlai_chat_task_demo"
BOT_TASK = ROOT / "tests" / "data" / "parlai_bot_task"
STANDINS = [] if os.environ.get("MEPHISTO_DIST_TEST_REAL_PARLAI") else [ROOT / "tests" / "parlai_standin"]
"""MEPHISTO_DIST_TEST_REAL_PARLAI=1 runs these with the ``parlai`` installed beside (README, "ParlAI chat")."""
PAGE_MS = 30_000


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    paths = [str(p) for p in STANDINS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))  # every process the test starts imports "parlai"
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    yield rt
    rt.close()


def launch(runtime: Runtime, task_dir: Path, *args: str) -> int:
    launched = subprocess.run(
        [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), "--detach", "-q", *args,
         f"mephisto.task.task_name=parlai-{uuid.uuid4().hex[:6]}", f"mephisto.architect.port={free_port()}"],
        cwd=ROOT, env=child_env(runtime.settings), capture_output=True, text=True, timeout=300, check=False)
    assert launched.returncode == 0, launched.stderr
    return int(launched.stdout.strip().splitlines()[-1])


def open_page(browser: Any, base_url: str, worker: str) -> Any:
    page = browser.new_context(viewport={"width": 1100, "height": 750}).new_page()
    page.set_default_timeout(PAGE_MS)
    page.goto(f"{base_url}/?worker_id={worker}&assignment_id={uuid.uuid4().hex[:6]}")
    return page


def say(page: Any, text: str) -> None:
    page.wait_for_selector(".response-text-input:not([disabled])")
    page.fill(".response-text-input", text)
    page.click("button.submit-response")


def chat_text(page: Any) -> str:
    return str(page.inner_text(".chat-container-pane"))


def test_parlai_chat_demo_two_workers_with_onboarding(tmp_path: Path, runtime: Runtime, browser: Any) -> None:
    run_id = launch(runtime, DEMO, "--script", str(DEMO / "parlai_test_script.py"), "conf=onboarding_example")
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            runner_worker(runtime.settings, tmp_path / "runner.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as web:
        alice, bob = open_page(browser, web, "alice"), open_page(browser, web, "bob")
        for name, page in (("alice", alice), ("bob", bob)):
            page.wait_for_selector("text=Welcome onboard!")
            if name == "alice":
                page.screenshot(path=str(tmp_path / "parlai-onboarding.png"))
            say(page, f"Hello, I am {name}")
        for page in (alice, bob):
            page.wait_for_selector("text=Thank you for your input!")
        # Onboarding submitted and passed, both in the chat: the world asks Chat Agent 1 (the first unit's
        # worker, whoever claimed it) first.
        enabled = ".response-text-input:not([disabled])"
        speaker = wait_for(lambda: next((n for n, p in (("alice", alice), ("bob", bob)) if p.query_selector(enabled)),
                                        None), timeout_s=60, message="the world to ask its first speaker")
        first_page, second_page = (alice, bob) if speaker == "alice" else (bob, alice)
        first_page.screenshot(path=str(tmp_path / "parlai-paired.png"))
        lines = [("Hi, how are you?", "Fine thanks, and you?"), ("Very well.", "Good to hear!")]
        for first, second in lines:
            say(first_page, first)
            wait_for(lambda first=first: first in chat_text(second_page), timeout_s=20, message=f"{first!r} across")
            say(second_page, second)
            wait_for(lambda second=second: second in chat_text(first_page), timeout_s=20, message=f"{second!r} back")
        alice.screenshot(path=str(tmp_path / "parlai-chat.png"))
        for page, enjoyed in ((alice, "A lot"), (bob, "Somewhat")):
            page.wait_for_selector("text=Please fill out the form to complete the chat:")
            page.wait_for_selector("select")
            page.locator("select").nth(0).select_option(enjoyed)
            page.locator("select").nth(1).select_option("Definitely a human")
            page.fill("input[type=text]", f"{enjoyed} comment")
            page.click("#id_send_msg_button")
        for page in (alice, bob):
            page.wait_for_selector("button:has-text('Done')")
        alice.screenshot(path=str(tmp_path / "parlai-done.png"))
        for page in (alice, bob):
            page.click("button:has-text('Done')")

        def completed() -> dict[str, dict[str, Any]]:
            with transaction(runtime.sessions) as session:
                records = list(unit_records(session, [run_id]))
            return {r["worker_name"]: r for r in records if r["status"] == "completed"}

        def with_world_data(done: dict[str, dict[str, Any]]) -> bool:
            """The world's data is stored by the runner as the world ends, which may come a moment after
            the pages' submissions completed the units."""
            return len(done) == 2 and any(m["direction"] == "state" for m in done["bob"]["data"]["messages"])

        submitted = wait_for(lambda: with_world_data(done := completed()) and done, timeout_s=30,
                             message="both units done, with the world's data")
    second = "bob" if speaker == "alice" else "alice"
    said = {name: [m["data"].get("text") for m in record["data"]["messages"] if m["direction"] == "in"]
            for name, record in submitted.items()}
    assert said[speaker][:2] == ["Hi, how are you?", "Very well."]
    assert said[second][:2] == ["Fine thanks, and you?", "Good to hear!"]
    form = [m["data"] for m in submitted["alice"]["data"]["messages"]
            if m["direction"] == "in" and "form_responses" in (m["data"].get("task_data") or {})]
    assert form and form[0]["task_data"]["form_responses"][0]["response"] == "A lot"
    heard = [m["data"].get("text") for m in submitted[speaker]["data"]["messages"] if m["direction"] == "out"]
    assert "Fine thanks, and you?" in heard and "Good to hear!" in heard
    world_data = [m["data"] for m in submitted["bob"]["data"]["messages"] if m["direction"] == "state"]
    assert world_data == [{"id": "SUBMIT_WORLD_DATA", "WORLD_DATA": {"example_key": "example_value"}, "text": "",
                           "timestamp": world_data[0]["timestamp"]}]
    # Each worker's onboarding world is in the export too: what they said in it, and that they passed.
    with transaction(runtime.sessions) as session:
        onboarded = {r["worker_name"]: r for r in onboarding_records(session, [run_id])}
    assert {name: r["onboarding"] for name, r in onboarded.items()} == {"alice": "passed", "bob": "passed"}
    for name, record in onboarded.items():
        said_there = [m["data"].get("text") for m in record["data"]["messages"] if m["direction"] == "in"]
        assert f"Hello, I am {name}" in said_there


def test_parlai_chat_world_with_a_bot_partner(tmp_path: Path, runtime: Runtime, browser: Any) -> None:
    run_id = launch(runtime, BOT_TASK)
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            runner_worker(runtime.settings, tmp_path / "runner.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as web:
        carol = open_page(browser, web, "carol")
        for text in ("hello bot", "still there?"):
            say(carol, text)
            wait_for(lambda text=text: f"ECHO: {text.upper()}" in chat_text(carol), timeout_s=20,
                     message=f"the bot to echo {text!r}")
        carol.wait_for_selector("button:has-text('Done')")
        carol.screenshot(path=str(tmp_path / "parlai-bot.png"))
        carol.click("button:has-text('Done')")

        def record() -> dict[str, Any] | None:
            with transaction(runtime.sessions) as session:
                done = [r for r in unit_records(session, [run_id]) if r["status"] == "completed"]
            return done[0] if done else None

        done = wait_for(record, timeout_s=30, message="carol's unit done")
    heard = [m["data"].get("text") for m in done["data"]["messages"] if m["direction"] == "out"]
    assert "ECHO: HELLO BOT" in heard and "ECHO: STILL THERE?" in heard
    assert any((m["data"].get("WORLD_DATA") or {}).get("turns") == 2 for m in done["data"]["messages"])


def test_an_onboarding_world_whose_runner_worker_dies_expires_and_the_worker_starts_again(
        tmp_path: Path, runtime: Runtime, browser: Any) -> None:
    """SIGKILL the runner worker playing Alice's onboarding world: its lease lapses, the live sweep expires
    her onboarding agent (nothing else holds it; a runner coming back would find the lease claimed); she
    reloads the page and another runner worker plays the world from scratch, which she passes. The export
    keeps both attempts."""
    run_id = launch(runtime, DEMO, "--script", str(DEMO / "parlai_test_script.py"), "conf=onboarding_example")
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            celery_beat(runtime.settings, tmp_path / "beat.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as web:
        with runner_worker(runtime.settings, tmp_path / "runner1.log") as first:
            alice = open_page(browser, web, "alice")
            alice.wait_for_selector("text=Welcome onboard!")
            os.killpg(first.pid, signal.SIGKILL)

        def attempts() -> dict[str, str]:
            with transaction(runtime.sessions) as session:
                return {str(a): str(s) for a, s in session.execute(
                    select(OnboardingAgent.id, OnboardingAgent.status).where(OnboardingAgent.task_run_id == run_id))}

        wait_for(lambda: list(attempts().values()) == ["expired"], timeout_s=30,
                 message="the sweep to expire the onboarding whose runner died")
        with runner_worker(runtime.settings, tmp_path / "runner2.log"):
            alice.reload()
            alice.wait_for_selector("text=Welcome onboard!")
            say(alice, "Hello, I am alice")
            alice.wait_for_selector("text=Thank you for your input!")
            wait_for(lambda: sorted(attempts().values()) == ["approved", "expired"], timeout_s=30,
                     message="the second attempt to pass")
    assert b"lost its runner" in (tmp_path / "worker.log").read_bytes()
    with transaction(runtime.sessions) as session:
        exported = sorted(str(r["onboarding"]) for r in onboarding_records(session, [run_id]))
    assert exported[-1] == "passed" and len(exported) == 2, exported
