"""A task script's own concurrent TaskRunner (``examples/chat_pair_task``) on real processes: two pages
on two web processes claim the two units of an assignment, the first waits, both go ``in task`` when the
runner worker starts the assignment, the runner relays their messages, both submit, and the export has
each agent's conversation. Then what releases a waiting agent (a partner who never comes, a waiting page gone
silent) and what ends a started assignment early (a page gone silent mid-conversation, a turn not taken in
time), with the tokens Redis holds recounted against the database after each."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, AgentMessage, TaskRun, Unit
from mephisto_dist.domain.status import UNIT_WORKER_COUNTED, UnitStatus
from mephisto_dist.limiter import keys
from mephisto_dist.limiter.units import token_holder, unit_holder
from mephisto_dist.review.export import ended_attempt_records, unit_records
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import Settings
from tests.conftest import wait_for
from tests.live_page import LivePage
from tests.system import (
    ROOT,
    celery_beat,
    celery_worker,
    child_env,
    make_runtime,
    register,
    runner_worker,
    web_server,
)

pytestmark = pytest.mark.system

EXAMPLE = ROOT / "examples" / "chat_pair_task"
TASK_NAME = "chat-pair-test"


@pytest.fixture
def live(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    """A deployment whose live sweep (beat, every 2 s) takes a page silent for 2 s."""
    rt = make_runtime(tmp_path / "data", database_url, redis_url, LIVE_DISCONNECT_S="2")
    yield rt
    rt.close()


def chat_task_dir(root: Path, *, partner_wait_s: int = 300, turn_timeout_s: int = 60, num_turns: int = 1,
                  submission_timeout_s: int = 600, script: str | None = None, runner_restarts: int = 0) -> Path:
    """The example chat task, or ``script`` as its task script (with ``record`` in its config: a file in
    ``root`` the script may write what happened to)."""
    task_dir = root / "chat_pair_task"
    (task_dir / "hydra_configs" / "conf").mkdir(parents=True)
    if script is None:
        shutil.copy(EXAMPLE / "run_task.py", task_dir / "run_task.py")
    else:
        (task_dir / "run_task.py").write_text(script)
    (task_dir / "bundle.js").write_text("/* the pages are websocket clients in these tests */\n")
    (task_dir / "hydra_configs" / "conf" / "example.yaml").write_text(f"""#@package _global_
defaults:
  - /mephisto/blueprint: remote_procedure
  - /mephisto/architect: mock
  - /mephisto/provider: mock
mephisto:
  blueprint:
    task_source: ${{task_dir}}/bundle.js
    link_task_source: false
    units_per_assignment: 2
  task:
    task_name: {TASK_NAME}
    task_title: "Chat"
    task_description: "Chat with another worker"
    task_reward: 0.1
    task_tags: "test"
    partner_wait_in_seconds: {partner_wait_s}
    submission_timeout: {submission_timeout_s}
    runner_restarts: {runner_restarts}
    max_num_concurrent_units: 4
    allowed_concurrent: 1
    maximum_units_per_worker: 2
num_turns: {num_turns}
turn_timeout: {turn_timeout_s}
topics: ["the weather"]
record: {root / "record.txt"}
""")
    return task_dir


def launch(settings: Settings, task_dir: Path) -> int:
    launched = subprocess.run(
        [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), "--detach", "-q"],
        cwd=ROOT, env=child_env(settings), capture_output=True, text=True, timeout=90, check=False)
    assert launched.returncode == 0, launched.stderr
    return int(launched.stdout.strip().splitlines()[-1])


@contextmanager
def sweeping_deployment(rt: Runtime, run_id: int, logs: Path) -> Iterator[str]:
    """A Celery worker, beat (the live sweep) and a web process, no runner worker (the test starts and
    kills its own); yields the web URL once the assignment's two units are launched."""
    with celery_worker(rt.settings, logs / "worker.log"), celery_beat(rt.settings, logs / "beat.log"), \
            web_server(rt.settings, run_id, logs / "web.log") as web:
        wait_for(lambda: unit_statuses(rt, run_id) == ["launched", "launched"], timeout_s=30,
                 message="the two units of the assignment to be launched")
        yield web


@contextmanager
def chat_deployment(rt: Runtime, run_id: int, logs: Path) -> Iterator[str]:
    """Every process a hosted run needs: :func:`sweeping_deployment` and the runner worker."""
    with runner_worker(rt.settings, logs / "runner.log"), sweeping_deployment(rt, run_id, logs) as web:
        yield web


@contextmanager
def started_pair(web: str) -> Iterator[tuple[LivePage, LivePage]]:
    """Alice and Bob claim the assignment's two units and open their pages; yields them once the runner
    greeted both."""
    alice, bob = register(web, "alice"), register(web, "bob")
    pages = (LivePage(web, alice["agent_id"]).open(), LivePage(web, bob["agent_id"]).open())
    try:
        for index, page in enumerate(pages):
            wait_for(lambda page=page: "in task" in page.statuses, timeout_s=30, message="the assignment to start")
            wait_for(lambda page=page, i=index: f"You are speaker {i}." in page.texts(), message="the greeting")
        yield pages
    finally:
        for page in pages:
            page.close()


@contextmanager
def first_turn_relayed(rt: Runtime, run_id: int, logs: Path) -> Iterator[tuple[str, Any, LivePage, LivePage]]:
    """:func:`sweeping_deployment`, a first runner worker (its log ``runner1.log``) and :func:`started_pair`;
    yields the web URL, that runner worker's process and the two pages once Alice's first turn reached Bob."""
    with (
        sweeping_deployment(rt, run_id, logs) as web,
        runner_worker(rt.settings, logs / "runner1.log") as runner,
        started_pair(web) as (alice, bob),
    ):
        alice.say("hi bob")
        wait_for(lambda: "hi bob" in bob.texts(), message="alice's turn relayed")
        yield web, runner, alice, bob


def statuses(rt: Runtime, run_id: int) -> dict[str, str]:
    with transaction(rt.sessions) as session:
        return {str(a): str(s) for a, s in session.execute(
            select(Agent.id, Agent.status).where(Agent.task_run_id == run_id))}


def unit_statuses(rt: Runtime, run_id: int) -> list[str]:
    with transaction(rt.sessions) as session:
        return [str(s) for s in session.scalars(select(Unit.status).where(Unit.task_run_id == run_id)
                                                .order_by(Unit.id))]


def unit_of(rt: Runtime, agent_id: str) -> int:
    with transaction(rt.sessions) as session:
        return int(session.scalar(select(Agent.unit_id).where(Agent.id == agent_id)) or 0)


def tokens_and_database(rt: Runtime, run_id: int) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Every pool the run's units take tokens in: the holders in Redis, and the holders the database's
    units say there should be (launched or assigned: the run's slot; assigned: the worker's concurrent
    slot; assigned or submitted: the worker's units of the task)."""
    with transaction(rt.sessions) as session:
        units = session.execute(select(Unit.id, Unit.status, Unit.launch_id, Unit.worker_id)
                                .where(Unit.task_run_id == run_id)).all()
        workers = set(session.scalars(select(Agent.worker_id).where(Agent.task_run_id == run_id)))
    expected = {keys.run_units_pool(run_id): {token_holder(u.id, u.launch_id) for u in units
                                              if u.status in (UnitStatus.LAUNCHED, UnitStatus.ASSIGNED)}}
    for worker in workers:
        expected[keys.worker_assigned_pool(run_id, worker)] = {
            unit_holder(u.id) for u in units if u.worker_id == worker and u.status == UnitStatus.ASSIGNED}
        expected[keys.worker_task_units_pool(TASK_NAME, worker)] = {
            unit_holder(u.id) for u in units if u.worker_id == worker and UnitStatus(u.status) in UNIT_WORKER_COUNTED}
    return {pool: rt.limiter.holders(pool) for pool in expected}, expected


def tokens_match(rt: Runtime, run_id: int) -> bool:
    held, expected = tokens_and_database(rt, run_id)
    return held == expected


def assert_tokens_match(rt: Runtime, run_id: int, timeout_s: float = 5.0) -> None:
    """Tokens are given back after the commit that freed them: wait out that moment, then compare."""
    try:
        wait_for(lambda: tokens_match(rt, run_id), timeout_s=timeout_s, message="the pools to hold what the database says")
    except AssertionError:
        held, expected = tokens_and_database(rt, run_id)
        assert held == expected


def new_pair_chats_to_the_end(rt: Runtime, web: str, run_id: int) -> tuple[str, str]:
    """Carol and Dave take the run's units back in the pool, chat a turn each through a runner worker, submit,
    and the run finishes; returns their agent ids."""
    carol, dave = register(web, "carol"), register(web, "dave")
    pages = [LivePage(web, carol["agent_id"]).open(), LivePage(web, dave["agent_id"]).open()]
    try:
        for page in pages:
            wait_for(lambda page=page: "in task" in page.statuses, timeout_s=30, message="the new pair to start")
        pages[0].say("hello dave")
        wait_for(lambda: "hello dave" in pages[1].texts(), message="carol's turn relayed")
        pages[1].say("hello carol")
        wait_for(lambda: any(m.get("task_data", {}).get("task_done") for m in pages[0].messages),
                 message="the runner to end the conversation")
        submit(web, carol["agent_id"], {"rating": 5})
        submit(web, dave["agent_id"], {"rating": 5})
    finally:
        for page in pages:
            page.close()
    wait_for(lambda: run_finished(rt, run_id), timeout_s=30, message="the run to finish")
    return str(carol["agent_id"]), str(dave["agent_id"])


def submit(url: str, agent_id: str, data: dict[str, Any]) -> None:
    answer = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": data}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_two_pages_on_two_web_processes_chat_through_the_runner(tmp_path: Path, runtime: Runtime) -> None:
    run_id = launch(runtime.settings, chat_task_dir(tmp_path))
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            runner_worker(runtime.settings, tmp_path / "runner.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web1.log") as web1, \
            web_server(runtime.settings, run_id, tmp_path / "web2.log") as web2:
        wait_for(lambda: unit_statuses(runtime, run_id) == ["launched", "launched"], timeout_s=30,
                 message="the two units of the assignment to be launched")
        alice = register(web1, "alice")
        assert alice["init_task_data"] == {"task_data": {"topic": "the weather"}, "num_turns": 1}, alice
        first = LivePage(web1, alice["agent_id"]).open()
        wait_for(lambda: "waiting" in first.statuses, message="the first page to be told it waits")
        assert statuses(runtime, run_id) == {alice["agent_id"]: "waiting"}
        first.say("sent while waiting")  # kept for the runner, as Mephisto queues it
        bob = register(web2, "bob")
        second = LivePage(web2, bob["agent_id"]).open()
        try:
            for page in (first, second):
                wait_for(lambda page=page: "in task" in page.statuses, timeout_s=30,
                         message="both pages to be told the assignment started")
            wait_for(lambda: "You are speaker 1." in second.texts(), message="the runner's greeting")
            # Turn 0: speaker 0 (alice) acts first; her message queued while waiting is her turn.
            wait_for(lambda: "sent while waiting" in second.texts(), message="alice's message relayed to bob")
            second.say("hello alice")
            wait_for(lambda: "hello alice" in first.texts(), message="bob's message relayed to alice")
            wait_for(lambda: any(m.get("task_data", {}).get("task_done") for m in first.messages),
                     message="the runner to end the conversation")
            submit(web1, alice["agent_id"], {"rating": 5})
            submit(web2, bob["agent_id"], {"rating": 4})
        finally:
            first.close()
            second.close()
        assert set(statuses(runtime, run_id).values()) == {"completed"}
    with transaction(runtime.sessions) as session:
        records = {r["agent_id"]: r for r in unit_records(session, [run_id])}
    said = {agent: [(m["direction"], m["data"].get("text")) for m in record["data"]["messages"]]
            for agent, record in records.items()}
    assert said[alice["agent_id"]] == [("out", "You are speaker 0."), ("in", "sent while waiting"),
                                       ("out", "hello alice"), ("out", None)]
    assert said[bob["agent_id"]] == [("out", "You are speaker 1."), ("out", "sent while waiting"),
                                     ("in", "hello alice"), ("out", None)]


def test_a_partner_who_never_comes_and_a_waiting_page_gone_silent_release_the_unit(
        tmp_path: Path, live: Runtime) -> None:
    """``partner_wait_in_seconds`` over: the waiting page hears ``expired`` (Mephisto's "no longer available"),
    its unit goes back to the pool with its worker's tokens; a waiting page that stops its heartbeats is
    disconnected the same way. Neither assignment started, so the runner ran nothing."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path, partner_wait_s=5))
    with sweeping_deployment(rt, run_id, tmp_path) as web:
        alice = register(web, "alice")
        alone = LivePage(web, alice["agent_id"]).open()
        try:
            wait_for(lambda: "waiting" in alone.statuses, message="alice to be told she waits")
            assert_tokens_match(rt, run_id)
            wait_for(lambda: "expired" in alone.statuses, timeout_s=20,
                     message="alice to be released after the partner wait")
        finally:
            alone.close()
        assert statuses(rt, run_id) == {alice["agent_id"]: "expired"}
        assert unit_statuses(rt, run_id) == ["launched", "launched"]
        assert_tokens_match(rt, run_id)

        bob = register(web, "bob")
        assert unit_of(rt, bob["agent_id"]) == unit_of(rt, alice["agent_id"]), "the released unit comes first"
        silent = LivePage(web, bob["agent_id"]).open()
        try:
            wait_for(lambda: "waiting" in silent.statuses, message="bob to be told he waits")
            silent.mute()
            wait_for(lambda: "disconnect" in silent.statuses, timeout_s=20,
                     message="bob's silent page to be disconnected")
        finally:
            silent.close()
        assert statuses(rt, run_id)[bob["agent_id"]] == "disconnect"
        assert unit_statuses(rt, run_id) == ["launched", "launched"]
        assert_tokens_match(rt, run_id)


def test_a_page_gone_silent_mid_conversation_ends_it_at_once_and_its_partner_submits_as_is(
        tmp_path: Path, live: Runtime) -> None:
    """Bob's page stops its heartbeats while the runner waits for his turn: the sweep disconnects him, and
    the entry it pushes to his inbox raises AgentDisconnectedError in the runner's act() at once (not at
    its next status re-read, every 5 s). As Mephisto: Alice becomes ``partner disconnect`` and may still
    submit her work as is, Bob's unit expires, cleanup_assignment runs; nothing stays held."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path, num_turns=2))
    with chat_deployment(rt, run_id, tmp_path) as web, started_pair(web) as (alice, bob):
        alice.say("hi bob")
        wait_for(lambda: "hi bob" in bob.texts(), message="alice's turn relayed")
        bob.mute()  # the runner now waits in bob's act(timeout=60)
        wait_for(lambda: "disconnect" in bob.statuses, timeout_s=20, message="bob's page to be disconnected")
        wait_for(lambda: "partner disconnect" in alice.statuses, timeout_s=2.5,
                 message="alice to hear at once that her partner left")
        assert statuses(rt, run_id) == {alice.agent_id: "partner disconnect", bob.agent_id: "disconnect"}
        submit(web, alice.agent_id, {"rating": 3})
        refused = httpx.post(web + "/submit_task", json={"USED_AGENT_ID": bob.agent_id, "final_data": {}})
        assert refused.status_code == 409, refused.text
        wait_for(lambda: b"cleanup_assignment(" in (tmp_path / "runner.log").read_bytes(),
                 message="the runner's cleanup_assignment")
    assert statuses(rt, run_id) == {alice.agent_id: "completed", bob.agent_id: "disconnect"}
    assert sorted(unit_statuses(rt, run_id)) == ["completed", "expired"]
    assert_tokens_match(rt, run_id)
    with transaction(rt.sessions) as session:
        records = {r["agent_id"]: r for r in unit_records(session, [run_id])}
    said = [(m["direction"], m["data"].get("text")) for m in records[alice.agent_id]["data"]["messages"]]
    assert said == [("out", "You are speaker 0."), ("in", "hi bob")]
    # Bob's part is kept in his expired unit's record, marked partial, with why it ended.
    gone = records[bob.agent_id]
    assert (gone["status"], gone["partial"], gone["agent_status"]) == ("expired", True, "disconnect")
    assert [(m["direction"], m["data"].get("text")) for m in gone["data"]["messages"]] == [
        ("out", "You are speaker 1."), ("out", "hi bob")]
    assert (records[alice.agent_id]["partial"], records[alice.agent_id]["agent_status"]) == (False, "completed")


def test_a_turn_not_taken_in_time_times_the_agent_out_and_frees_everything(tmp_path: Path, live: Runtime) -> None:
    """``act(timeout)`` expires on Alice's turn: she gets ``timeout``, Bob ``partner disconnect`` (both pages
    told), cleanup_assignment runs; Bob submits as is, Alice's late submission is refused, her unit expires;
    the tokens Redis holds are the database's."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path, turn_timeout_s=3))
    with chat_deployment(rt, run_id, tmp_path) as web, started_pair(web) as (alice, bob):
        wait_for(lambda: "timeout" in alice.statuses, timeout_s=20, message="alice's turn to time out")
        wait_for(lambda: "partner disconnect" in bob.statuses, message="bob to hear his partner left")
        wait_for(lambda: b"cleanup_assignment(" in (tmp_path / "runner.log").read_bytes(),
                 message="the runner's cleanup_assignment")
        assert statuses(rt, run_id) == {alice.agent_id: "timeout", bob.agent_id: "partner disconnect"}
        late = httpx.post(web + "/submit_task", json={"USED_AGENT_ID": alice.agent_id, "final_data": {}})
        assert late.status_code == 409, late.text
        submit(web, bob.agent_id, {"rating": 1})
    assert statuses(rt, run_id) == {alice.agent_id: "timeout", bob.agent_id: "completed"}
    assert sorted(unit_statuses(rt, run_id)) == ["completed", "expired"]
    assert_tokens_match(rt, run_id)
    held, _ = tokens_and_database(rt, run_id)
    assert held[keys.run_units_pool(run_id)] == set(), "no unit of the run is open: no slot stays taken"


def test_a_runner_worker_killed_mid_chat_ends_the_assignment_and_the_run_still_finishes(
        tmp_path: Path, live: Runtime) -> None:
    """SIGKILL the runner worker's process group mid-conversation: its lease lapses, the live sweep tells both
    pages ``expired``, their units go back to the pool (tokens recounted), what they said is kept; two new
    workers take the units on a new runner worker, chat and submit, each unit is completed once and the run
    finishes."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path))
    with first_turn_relayed(rt, run_id, tmp_path) as (web, runner, alice, bob):
        os.killpg(runner.pid, signal.SIGKILL)
        for page in (alice, bob):
            wait_for(lambda page=page: "expired" in page.statuses, timeout_s=20,
                     message="the pages to hear the assignment ended")
        assert statuses(rt, run_id) == {alice.agent_id: "expired", bob.agent_id: "expired"}
        assert unit_statuses(rt, run_id) == ["launched", "launched"]
        assert_tokens_match(rt, run_id)
        with transaction(rt.sessions) as session:
            kept = [(str(d), m["text"]) for d, m in session.execute(
                select(AgentMessage.direction, AgentMessage.data).where(AgentMessage.agent_id == alice.agent_id)
                .order_by(AgentMessage.seq))]
        assert kept == [("out", "You are speaker 0."), ("in", "hi bob")]

        with runner_worker(rt.settings, tmp_path / "runner2.log"):
            carol, dave = new_pair_chats_to_the_end(rt, web, run_id)
    assert statuses(rt, run_id) == {alice.agent_id: "expired", bob.agent_id: "expired",
                                    carol: "completed", dave: "completed"}
    with transaction(rt.sessions) as session:
        done = dict(session.execute(select(Unit.id, Unit.agent_id).where(Unit.task_run_id == run_id)).all())
        attempts = {r["agent_id"]: r for r in ended_attempt_records(session, [run_id])}
    assert sorted(done.values()) == sorted([carol, dave]), "each unit completed once"
    assert_tokens_match(rt, run_id)
    # The lost conversation is exported as the partial work of the two who had it, paid for by no one.
    assert set(attempts) == {alice.agent_id, bob.agent_id}
    assert {(r["partial"], r["agent_status"], r["status"], r["payment"]) for r in attempts.values()} == {
        (True, "expired", "completed", None)}
    said = [(m["direction"], m["data"].get("text")) for m in attempts[bob.agent_id]["data"]["messages"]]
    assert said == [("out", "You are speaker 1."), ("out", "hi bob")]


def test_a_runner_worker_killed_mid_chat_is_restarted_from_the_stored_messages_when_the_run_allows(
        tmp_path: Path, live: Runtime) -> None:
    """``mephisto.task.runner_restarts: 2``: SIGKILL the runner worker mid-conversation; the live sweep
    claims the lapsed lease and a second runner worker runs the assignment again, replaying what was said
    (the greeting and Alice's turn are not sent again), then takes Bob's turn, said while no runner ran,
    from his inbox. The pages hear no ending; both submit; each unit is completed, and paid, once; the
    export has the whole conversation once and no ended attempt."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path, runner_restarts=2))
    with first_turn_relayed(rt, run_id, tmp_path) as (web, first, alice, bob):
        with runner_worker(rt.settings, tmp_path / "runner2.log"):
            os.killpg(first.pid, signal.SIGKILL)
            bob.say("hi alice")  # into his inbox: no runner takes it until the restart
            wait_for(lambda: "hi alice" in alice.texts(), timeout_s=30,
                     message="the restarted runner to relay bob's turn")
            wait_for(lambda: all(any(m.get("task_data", {}).get("task_done") for m in page.messages)
                                 for page in (alice, bob)), message="the runner to end the conversation")
            submit(web, alice.agent_id, {"rating": 5})
            submit(web, bob.agent_id, {"rating": 4})
            wait_for(lambda: run_finished(rt, run_id), timeout_s=30, message="the run to finish")
        assert b"restarting its lost runner" in (tmp_path / "runner2.log").read_bytes()
        for page in (alice, bob):
            # No ending heard, no second start.
            assert [st for st in page.statuses if st != "waiting"] == ["in task"], page.statuses
        assert alice.texts().count("You are speaker 0.") == 1 and bob.texts().count("hi bob") == 1
    assert statuses(rt, run_id) == {alice.agent_id: "completed", bob.agent_id: "completed"}
    assert unit_statuses(rt, run_id) == ["completed", "completed"]
    assert_tokens_match(rt, run_id)
    with transaction(rt.sessions) as session:
        records = {r["agent_id"]: r for r in unit_records(session, [run_id])}
        attempts = list(ended_attempt_records(session, [run_id]))
    assert attempts == []
    said = {agent: [(m["direction"], m["data"].get("text")) for m in record["data"]["messages"]]
            for agent, record in records.items()}
    assert said[alice.agent_id] == [("out", "You are speaker 0."), ("in", "hi bob"), ("out", "hi alice"),
                                    ("out", None)]
    assert said[bob.agent_id] == [("out", "You are speaker 1."), ("out", "hi bob"), ("in", "hi alice"),
                                  ("out", None)]
    assert {r["payment"]["reward_pending"] for r in records.values()} == {0.1}, "each unit owed once"


def test_a_worker_who_never_submits_after_the_conversation_is_timed_out_after_the_submission_timeout(
        tmp_path: Path, live: Runtime) -> None:
    """``mephisto.task.submission_timeout``: once the runner's ``run_assignment`` returned, the agents have
    that long to submit (Mephisto's ``await_submit(timeout=submission_timeout)``). Alice submits; Bob never
    does: the sweep times him out (his page hears ``timeout``), his unit expires with him (a pair's
    conversation cannot be taken up alone), nothing stays held, the run finishes and the export marks his
    conversation as partial work."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path, submission_timeout_s=2))
    with chat_deployment(rt, run_id, tmp_path) as web, started_pair(web) as (alice, bob):
        alice.say("hi bob")
        wait_for(lambda: "hi bob" in bob.texts(), message="alice's turn relayed")
        bob.say("hi alice")
        wait_for(lambda: any(m.get("task_data", {}).get("task_done") for m in bob.messages),
                 message="the runner to end the conversation")
        submit(web, alice.agent_id, {"rating": 5})
        wait_for(lambda: "timeout" in bob.statuses, timeout_s=20, message="bob to be timed out")
        late = httpx.post(web + "/submit_task", json={"USED_AGENT_ID": bob.agent_id, "final_data": {}})
        assert late.status_code == 409, late.text
        wait_for(lambda: run_finished(rt, run_id), timeout_s=30, message="the run to finish")
    assert statuses(rt, run_id) == {alice.agent_id: "completed", bob.agent_id: "timeout"}
    assert sorted(unit_statuses(rt, run_id)) == ["completed", "expired"]
    assert_tokens_match(rt, run_id)
    with transaction(rt.sessions) as session:
        records = {r["agent_id"]: r for r in unit_records(session, [run_id])}
    assert (records[bob.agent_id]["partial"], records[bob.agent_id]["agent_status"]) == (True, "timeout")
    assert (records[alice.agent_id]["partial"], records[alice.agent_id]["agent_status"]) == (False, "completed")
    assert [m["data"].get("text") for m in records[bob.agent_id]["data"]["messages"]][:2] == [
        "You are speaker 1.", "hi bob"]


def run_finished(rt: Runtime, run_id: int) -> bool:
    with transaction(rt.sessions) as session:
        run = session.get(TaskRun, run_id)
        return bool(run and run.is_completed)


RECORDING_SCRIPT = '''
"""The example's chat runner, writing to ``record`` what Mephisto's contract calls on it."""
from typing import Any

from mephisto.abstractions._subcomponents.task_runner import TaskRunner
from mephisto.abstractions.blueprints.remote_procedure.remote_procedure_blueprint import (
    RemoteProcedureBlueprint,
    SharedRemoteProcedureTaskState,
)
from mephisto.data_model.exceptions import AgentShutdownError
from mephisto.operations.operator import Operator
from mephisto.operations.registry import register_mephisto_abstraction
from mephisto.tools.scripts import task_script
from omegaconf import DictConfig


class RecordingRunner(TaskRunner):
    is_concurrent = True

    def _record(self, line: str) -> None:
        with open(self.shared_state.task_config["record"], "a") as out:
            out.write(line + "\\n")

    def get_init_data_for_agent(self, agent: Any) -> dict[str, Any]:
        return {"task_data": {}}

    def run_assignment(self, assignment: Any, agents: list[Any]) -> None:
        for index, agent in enumerate(agents):
            agent.observe({"text": f"You are speaker {index}."})
        try:
            while True:
                for index, agent in enumerate(agents):
                    act = agent.act(timeout=60)
                    for other in agents:
                        if other is not agent:
                            other.observe({"text": act.get("text", ""), "speaker": index})
        except AgentShutdownError as stopped:
            self._record(f"act raised AgentShutdownError for {stopped.agent_id}")
            raise

    def shutdown(self) -> None:
        self._record("shutdown")
        super().shutdown()

    def cleanup_assignment(self, assignment: Any) -> None:
        self._record(f"cleanup_assignment {assignment.db_id}")


@register_mephisto_abstraction()
class RecordingBlueprint(RemoteProcedureBlueprint):
    TaskRunnerClass = RecordingRunner


@task_script(default_config_file="example.yaml")
def main(operator: Operator, cfg: DictConfig) -> None:
    shared_state = SharedRemoteProcedureTaskState(static_task_data=[{"topic": t} for t in cfg.topics],
                                                  task_config={"record": cfg.record})
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
'''


def test_a_forced_shutdown_shuts_the_runner_down_and_ends_the_run_with_nothing_held_or_paid(
        tmp_path: Path, live: Runtime) -> None:
    """``mephisto-dist shutdown RUN --force`` mid-conversation, the runner waiting in Bob's ``act``: the act
    raises AgentShutdownError (not a disconnect), the run's TaskRunner ``shutdown()`` is called once, then
    ``cleanup_assignment``; both agents end ``disconnect`` (their pages told), both units expire, no token
    stays taken, nothing is paid, the run finishes and the conversation so far is exported as partial."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path, script=RECORDING_SCRIPT))
    record = tmp_path / "record.txt"
    with chat_deployment(rt, run_id, tmp_path) as web, started_pair(web) as (alice, bob):
        alice.say("hi bob")
        wait_for(lambda: "hi bob" in bob.texts(), message="alice's turn relayed")
        stopped = subprocess.run(
            [sys.executable, "-m", "mephisto_dist.cli.app", "shutdown", str(run_id), "--force"],
            cwd=ROOT, env=child_env(rt.settings), capture_output=True, text=True, timeout=90, check=False)
        assert stopped.returncode == 0, stopped.stderr
        wait_for(lambda: record.exists() and "cleanup_assignment" in record.read_text(), timeout_s=20,
                 message="the runner to be shut down and cleaned up")
        for page in (alice, bob):
            wait_for(lambda page=page: "disconnect" in page.statuses, timeout_s=20,
                     message="the pages to hear they were disconnected")
        assignment = assignment_of(rt, bob.agent_id)
    assert record.read_text().splitlines() == [f"act raised AgentShutdownError for {bob.agent_id}", "shutdown",
                                               f"cleanup_assignment {assignment}"]
    assert statuses(rt, run_id) == {alice.agent_id: "disconnect", bob.agent_id: "disconnect"}
    assert unit_statuses(rt, run_id) == ["expired", "expired"]
    assert run_finished(rt, run_id)
    assert_tokens_match(rt, run_id)
    held, _ = tokens_and_database(rt, run_id)
    assert all(not holders for holders in held.values()), held
    with transaction(rt.sessions) as session:
        records = {r["agent_id"]: r for r in unit_records(session, [run_id])}
    assert {(r["status"], r["partial"]) for r in records.values()} == {("expired", True)}
    owed = [(r["payment"]["reward_paid"], r["payment"]["reward_pending"], r["payment"]["bonus_paid"],
             r["payment"]["bonus_pending"]) for r in records.values()]
    assert owed == [(0.0, 0.0, 0.0, 0.0)] * 2, "an expired unit is owed and paid nothing"
    assert [m["data"].get("text") for m in records[alice.agent_id]["data"]["messages"]] == [
        "You are speaker 0.", "hi bob"]


def assignment_of(rt: Runtime, agent_id: str) -> int:
    with transaction(rt.sessions) as session:
        return int(session.scalar(select(Agent.assignment_id).where(Agent.id == agent_id)) or 0)
