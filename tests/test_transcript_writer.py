"""The runner worker's transcript writer (``runners.assignments.transcript``) and the runner channel that
stores a page's message with its next write (``runners.assignments.channel``): real database, real Redis."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis
from sqlalchemy import select

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import AgentMessage
from mephisto_dist.limiter import keys
from mephisto_dist.runners.assignments.channel import RunnerChannel, give_back_taken, stored_replay
from mephisto_dist.runners.assignments.replay import IN, OUT
from mephisto_dist.runners.assignments.transcript import NotSent, TranscriptWriter, _Batch
from mephisto_dist.runners.live.inbox import Inbox


def _line(agent_id: str, seq: int, text: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {"task_run_id": 1, "agent_id": agent_id, "seq": seq, "direction": OUT, "data": {"text": text},
            "created_at": datetime.now(UTC)}


def _lines(rt: Any, agent_id: str) -> list[tuple[int, str, str]]:
    with read_transaction(rt.sessions) as session:
        rows = session.execute(select(AgentMessage.seq, AgentMessage.direction, AgentMessage.data)
                               .where(AgentMessage.agent_id == agent_id).order_by(AgentMessage.seq)).all()
    return [(int(seq), str(direction), str((data or {}).get("text"))) for seq, direction, data in rows]


def _heard(pubsub: Any, within_s: float = 5.0) -> list[Any]:
    """What the subscriber heard (until a pause after the first message): its payloads."""
    found: list[Any] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            found.append(message["data"])
        elif found:
            break
    return found


def test_a_batch_with_one_runners_bad_line_stores_and_sends_the_others(runtime: Any) -> None:
    writer = TranscriptWriter(runtime.sessions, runtime.redis)
    writer.write([_line("agent-a", 1, "first")])
    pubsub = runtime.redis.pubsub()
    pubsub.subscribe("to-b")
    runtime.redis.rpush("taking-b", "x")
    # Two runners' writes in one batch (as the writer takes what is queued): a's repeats a stored seq.
    repeat = _Batch([_line("agent-a", 1, "again")], (), (("to-a", "a"),))
    fine = _Batch([_line("agent-b", 1, "hello")], ("taking-b",), (("to-b", "b"),))
    writer._store([repeat, fine])
    assert repeat.error is not None and not repeat.stored
    assert fine.error is None and fine.stored
    assert _lines(runtime, "agent-a") == [(1, OUT, "first")]
    assert _lines(runtime, "agent-b") == [(1, OUT, "hello")]
    assert runtime.redis.exists("taking-b") == 0, "what was taken is freed once stored"
    assert _heard(pubsub) == [b"b"], "the stored line's message is sent"
    pubsub.close()


def test_writes_from_many_threads_are_all_stored_and_each_caller_returns_after_its_own(runtime: Any) -> None:
    writer = TranscriptWriter(runtime.sessions, runtime.redis)
    errors: list[BaseException] = []

    def runner(number: int) -> None:
        try:
            for seq in range(1, 21):
                writer.write([_line(f"agent-{number}", seq, f"{number}-{seq}")])
                assert _lines(runtime, f"agent-{number}")[-1] == (seq, OUT, f"{number}-{seq}"), \
                    "a write returns once its line is committed"
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=runner, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    for number in range(8):
        assert [seq for seq, _, _ in _lines(runtime, f"agent-{number}")] == list(range(1, 21))


def test_a_line_stored_whose_publish_failed_says_so(runtime: Any, redis_server: str) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    writer = TranscriptWriter(runtime.sessions, dead)
    with pytest.raises(NotSent) as raised:
        writer.write([_line("agent-n", 1, "kept")], published=(("to-n", "x"),))
    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    assert _lines(runtime, "agent-n") == [(1, OUT, "kept")], "stored all the same: a retry must not repeat it"


def test_a_message_taken_is_stored_with_the_runners_next_send_and_kept_for_a_restart_until_then(
        runtime: Any) -> None:
    inbox = Inbox(runtime.redis)
    channel = RunnerChannel(runtime.sessions, runtime.redis, 1, longest_wait_s=0.5)
    pubsub = runtime.redis.pubsub()
    pubsub.subscribe(keys.agent_channel("agent-y"))
    inbox.push_message("agent-x", {"text": "hi y", "update_id": "u1"})
    taken = channel.receive("agent-x", 0.5)
    assert taken is not None and taken.data == {"text": "hi y", "update_id": "u1"}
    channel.received("agent-x", taken.data)
    assert _lines(runtime, "agent-x") == [], "not stored yet: it goes with the next write"
    assert runtime.redis.llen(keys.agent_inbox_taking("agent-x")) == 1, "kept where a restart finds it"
    channel.send("agent-y", {"text": "hi y", "update_id": "o1"})
    assert _lines(runtime, "agent-x") == [(1, IN, "hi y")]
    assert _lines(runtime, "agent-y") == [(1, OUT, "hi y")]
    assert runtime.redis.exists(keys.agent_inbox_taking("agent-x")) == 0
    heard = [json.loads(payload) for payload in _heard(pubsub)]
    assert [packet["data"]["update_id"] for packet in heard] == ["o1"]
    pubsub.close()

    # A runner that dies between taking a message and its next write: the message is given back to its
    # restart, which stores it.
    inbox.push_message("agent-x", {"text": "second", "update_id": "u2"})
    dying = RunnerChannel(runtime.sessions, runtime.redis, 1, longest_wait_s=0.5)
    entry = dying.receive("agent-x", 0.5)
    assert entry is not None
    dying.received("agent-x", entry.data or {})
    del dying  # its process died here
    replay = stored_replay(runtime.sessions, ["agent-x", "agent-y"])
    give_back_taken(runtime.redis, ["agent-x"], replay)
    restarted = RunnerChannel(runtime.sessions, runtime.redis, 1, longest_wait_s=0.5, replay=replay)
    replayed = restarted.receive("agent-x", 0.5)
    assert replayed is not None and (replayed.data or {}).get("update_id") == "u1"
    restarted.received("agent-x", replayed.data or {})  # as act does: stored already, not again
    again = restarted.receive("agent-x", 0.5)
    assert again is not None and (again.data or {}).get("update_id") == "u2"
    restarted.received("agent-x", again.data or {})
    restarted.close(["agent-x", "agent-y"])
    assert _lines(runtime, "agent-x") == [(1, IN, "hi y"), (2, IN, "second")], \
        "a runner that ends stores what it took before the inboxes go"


def test_a_message_taken_then_answered_to_the_same_page_is_numbered_before_the_answer(runtime: Any) -> None:
    """The taken message waits for the runner's next write, but it came first: its line is numbered first."""
    inbox = Inbox(runtime.redis)
    channel = RunnerChannel(runtime.sessions, runtime.redis, 1, longest_wait_s=0.5)
    channel.send("agent-s", {"text": "hello", "update_id": "o0"})
    inbox.push_message("agent-s", {"text": "question", "update_id": "u1"})
    taken = channel.receive("agent-s", 0.5)
    assert taken is not None
    channel.received("agent-s", taken.data or {})
    channel.send("agent-s", {"text": "answer", "update_id": "o1"})
    assert _lines(runtime, "agent-s") == [(1, OUT, "hello"), (2, IN, "question"), (3, OUT, "answer")]
