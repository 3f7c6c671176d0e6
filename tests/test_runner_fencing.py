"""A runner worker paused past its lease (SIGSTOP of its process group, as a frozen VM or a long GC pause
would), whose assignment the live sweep ended or restarted elsewhere meanwhile, then resumed (SIGCONT):
it finds its lease no longer its own and stops without touching what is no longer its (runners.assignments
.lease, "Fencing"): no unit moved, no page's message taken, no inbox dropped, no line written."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import AgentMessage
from mephisto_dist.limiter import keys
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import runner_worker
from tests.test_assignment_runner import (
    assert_tokens_match,
    chat_task_dir,
    first_turn_relayed,
    launch,
    live,
    new_pair_chats_to_the_end,
    run_finished,
    statuses,
    submit,
    unit_statuses,
)

pytestmark = pytest.mark.system

__all__ = ["live"]  # the deployment fixture, shared with the runner's other system tests

LOST_LINE = b"lease lapsed"


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """The process group stopped until the block ends (or resumed at once by ``resume``); always resumed."""
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def test_a_runner_paused_past_its_lease_and_resumed_moves_nothing_after_the_sweep_ended_its_assignment(
        tmp_path: Path, live: Runtime) -> None:
    """No restarts: the sweep ends the paused runner's assignment (pages told ``expired``, both units back
    to ``launched``). Resumed, the old runner would have taken its agents' absence as a partner leaving and
    expired a unit the pool holds; fenced, it stops, both units stay launched, a new pair chats to the end
    on another runner worker and the run finishes with each unit completed once."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path))
    with first_turn_relayed(rt, run_id, tmp_path) as (web, first, alice, bob):
        with paused(first.pid):
            for page in (alice, bob):
                wait_for(lambda page=page: "expired" in page.statuses, timeout_s=20,
                         message="the pages to hear the assignment ended")
            assert unit_statuses(rt, run_id) == ["launched", "launched"]
        wait_for(lambda: LOST_LINE in (tmp_path / "runner1.log").read_bytes(), timeout_s=20,
                 message="the resumed runner to find its lease gone")
        assert unit_statuses(rt, run_id) == ["launched", "launched"], "the resumed runner moved a unit"
        # Nor did it take its agents' end for a forced stop of the run, shutting down the run's TaskRunner
        # in its process (and with it every other assignment of the run the process hosts).
        assert b"TaskRunner.shutdown()" not in (tmp_path / "runner1.log").read_bytes()
        assert_tokens_match(rt, run_id)

        with runner_worker(rt.settings, tmp_path / "runner2.log"):
            carol, dave = new_pair_chats_to_the_end(rt, web, run_id)
    assert statuses(rt, run_id) == {alice.agent_id: "expired", bob.agent_id: "expired",
                                    carol: "completed", dave: "completed"}
    assert unit_statuses(rt, run_id) == ["completed", "completed"]
    assert_tokens_match(rt, run_id)


def test_a_runner_paused_past_its_lease_and_resumed_leaves_the_restarted_runner_alone(
        tmp_path: Path, live: Runtime) -> None:
    """``runner_restarts: 2``, two turns: the sweep restarts the paused runner's assignment on a second
    runner worker, which relays Bob's first turn; Bob, quick, writes his second before Alice: it waits in
    his inbox, where the old runner, paused in its wait for Bob's first turn, would take it once resumed
    (relaying it itself, out of turn, and writing a line the new runner writes too). Fenced, the old
    runner stops first; the second turn goes through the new runner once each way, the pages hear no
    second start, each line is stored once and the run finishes."""
    rt = live
    run_id = launch(rt.settings, chat_task_dir(tmp_path, runner_restarts=2, num_turns=2))
    with first_turn_relayed(rt, run_id, tmp_path) as (web, first, alice, bob):
        with runner_worker(rt.settings, tmp_path / "runner2.log"):
            with paused(first.pid):
                bob.say("hi alice")
                wait_for(lambda: "hi alice" in alice.texts(), timeout_s=30,
                         message="the restarted runner to relay bob's turn")
                bob.say("fine")  # his next turn, early: it waits in his inbox
                wait_for(lambda: rt.redis.llen(keys.agent_inbox(bob.agent_id)) == 1,
                         message="bob's early turn to wait in his inbox")
            wait_for(lambda: LOST_LINE in (tmp_path / "runner1.log").read_bytes(), timeout_s=20,
                     message="the resumed runner to find its lease gone")
            assert rt.redis.llen(keys.agent_inbox(bob.agent_id)) == 1, "the resumed runner took bob's turn"
            assert "fine" not in alice.texts()
            alice.say("how are you")
            wait_for(lambda: "how are you" in bob.texts(), message="alice's second turn relayed")
            wait_for(lambda: "fine" in alice.texts(), message="bob's second turn relayed")
            wait_for(lambda: all(any(m.get("task_data", {}).get("task_done") for m in page.messages)
                                 for page in (alice, bob)), message="the runner to end the conversation")
            submit(web, alice.agent_id, {"rating": 5})
            submit(web, bob.agent_id, {"rating": 4})
            wait_for(lambda: run_finished(rt, run_id), timeout_s=30, message="the run to finish")
        for page in (alice, bob):
            assert [st for st in page.statuses if st != "waiting"] == ["in task"], page.statuses
        assert alice.texts().count("fine") == 1 and bob.texts().count("how are you") == 1
    assert statuses(rt, run_id) == {alice.agent_id: "completed", bob.agent_id: "completed"}
    assert unit_statuses(rt, run_id) == ["completed", "completed"]
    assert_tokens_match(rt, run_id)
    with transaction(rt.sessions) as session:
        said = Counter((str(agent), str(direction), (data or {}).get("text")) for agent, direction, data in
                       session.execute(select(AgentMessage.agent_id, AgentMessage.direction, AgentMessage.data)))
    assert [line for line, count in said.items() if count != 1 and line[2] is not None] == [], "a line stored twice"
    assert {line for line in said if line[2]} == {
        (alice.agent_id, "out", "You are speaker 0."), (alice.agent_id, "in", "hi bob"),
        (alice.agent_id, "out", "hi alice"), (alice.agent_id, "in", "how are you"), (alice.agent_id, "out", "fine"),
        (bob.agent_id, "out", "You are speaker 1."), (bob.agent_id, "out", "hi bob"), (bob.agent_id, "in", "hi alice"),
        (bob.agent_id, "out", "how are you"), (bob.agent_id, "in", "fine")}
