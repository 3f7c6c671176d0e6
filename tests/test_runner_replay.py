"""What a restarted runner replays (``runners.assignments.replay``), and the inbox entries a dying runner
took but had not stored given back to it (``runners.live.inbox``, real Redis)."""

from __future__ import annotations

import redis

from mephisto_dist.runners.assignments.replay import IN, OUT, STATE, Replay
from mephisto_dist.runners.live.inbox import Inbox


def test_a_replay_gives_back_what_each_page_said_and_counts_off_what_was_sent_and_kept() -> None:
    replay = Replay([("a", OUT, {"text": "hello a"}), ("a", IN, {"text": "hi", "update_id": "u1"}),
                     ("a", STATE, {"id": "SUBMIT_WORLD_DATA"}), ("b", OUT, {"text": "hello b"}),
                     ("b", OUT, {"text": "hi"}), ("a", IN, {"text": "again", "update_id": "u2"})])
    assert replay.said_update_ids("a") == {"u1", "u2"} and replay.said_update_ids("b") == frozenset()
    assert replay.already_sent("a") and not replay.already_sent("a"), "one message was sent to a"
    assert replay.next_said("a") == {"text": "hi", "update_id": "u1"}
    assert replay.taken("a") and not replay.taken("a"), "a stored message is not stored again, once"
    assert replay.already_kept("a") and not replay.already_kept("a")
    assert replay.already_sent("b") and replay.already_sent("b") and not replay.already_sent("b")
    assert replay.replaying()
    assert replay.next_said("a") == {"text": "again", "update_id": "u2"}
    assert replay.next_said("a") is None and replay.next_said("b") is None
    assert not replay.taken("b")
    assert not replay.replaying(), "used up: the runner is live"


def test_an_entry_taken_but_not_stored_goes_back_to_the_front_of_the_inbox(redis_client: redis.Redis) -> None:
    inbox = Inbox(redis_client)
    for text in ("stored", "lost", "later"):
        inbox.push_message("agent-r", {"text": text, "update_id": text})
    assert inbox.take("agent-r", 0) == {"kind": "act", "data": {"text": "stored", "update_id": "stored"}}
    assert inbox.take("agent-r", 0.1) is not None  # "lost": its runner dies before storing either
    # The restart knows "stored" from the transcript: only "lost" goes back, before "later".
    assert inbox.give_back("agent-r", frozenset({"stored"})) == 1
    assert [inbox.take("agent-r", 0)["data"]["text"] for _ in range(2)] == ["lost", "later"]  # type: ignore[index]
    inbox.taken("agent-r")
    assert inbox.give_back("agent-r", frozenset()) == 0, "nothing is taken once stored"
    inbox.drop("agent-r")
