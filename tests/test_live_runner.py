"""The remote procedure TaskRunner and the live channel's Redis parts, without processes: what a call's
function sees and how its failures are answered; silent pages found on the Redis clock, exactly once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded

from mephisto_dist.blueprints import remote_procedure
from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.blueprints.remote_procedure import RemoteProcedureAgentState, RemoteRequest
from mephisto_dist.blueprints.runner import CallView, RemoteCallFailed, RunView, runner_for
from mephisto_dist.limiter import keys
from mephisto_dist.runners.live import protocol
from mephisto_dist.runners.live.calls import CallLease
from mephisto_dist.runners.live.presence import Presence
from tests.conftest import wait_for

pytestmark = pytest.mark.system

ROW = {"index": 7, "text": "seven"}


def run_with(**functions: Any) -> RunView:
    return RunView(1, remote_procedure.NAME, {}, TaskHooks(function_registry=dict(functions)))


def call(target: str, args: Any, previous: tuple[RemoteRequest, ...] = ()) -> CallView:
    return CallView("agent1", "req-1", target, json.dumps(args),
                    remote_procedure.init_task_data(ROW, {}), previous)


def test_a_function_gets_mephistos_arguments_and_its_answer_is_json() -> None:
    seen: dict[str, Any] = {}

    def lookup(request_id: str, args: dict[str, Any], state: RemoteProcedureAgentState) -> dict[str, Any]:
        seen.update(request_id=request_id, args=args, init=state.init_data, before=list(state.requests))
        return {"found": args["q"] * 2}

    earlier = RemoteRequest("req-0", "lookup", "{}", '{"found": 0}', 1.0)
    runner = runner_for(remote_procedure.NAME)
    answer = runner.on_remote_call(run_with(lookup=lookup), call("lookup", {"q": 21}, (earlier,)))
    assert json.loads(answer) == {"found": 42}
    assert seen == {"request_id": "req-1", "args": {"q": 21}, "init": ROW, "before": ["req-0"]}


def test_failures_become_one_line_answers_without_internals() -> None:
    def broken(request_id: str, args: Any, state: Any) -> None:
        raise KeyError("the secret table")

    def opaque(request_id: str, args: Any, state: Any) -> object:
        return object()

    runner = runner_for(remote_procedure.NAME)
    cases = [("broken", "broken failed: KeyError"), ("opaque", "opaque returned a value that is not JSON"),
             ("missing", "no remote function named 'missing'")]
    for target, message in cases:
        with pytest.raises(RemoteCallFailed) as failure:
            runner.on_remote_call(run_with(broken=broken, opaque=opaque), call(target, {}))
        assert str(failure.value) == message
        assert "secret" not in protocol.error_response(str(failure.value))
    bad_args = CallView("agent1", "req-1", "broken", "{not json", {}, ())
    with pytest.raises(RemoteCallFailed, match="arguments of 'broken' are not JSON"):
        runner.on_remote_call(run_with(broken=broken), bad_args)


def test_the_workers_soft_time_limit_is_not_taken_for_the_functions_failure() -> None:
    def slow(request_id: str, args: Any, state: Any) -> None:
        raise SoftTimeLimitExceeded()  # what Celery raises inside a task at its soft limit

    with pytest.raises(SoftTimeLimitExceeded):
        runner_for(remote_procedure.NAME).on_remote_call(run_with(slow=slow), call("slow", {}))


def test_a_static_task_answers_no_remote_calls_and_wants_no_assigned_event() -> None:
    runner = runner_for("static_task")
    assert not runner.wants_unit_assigned and not runner.live
    with pytest.raises(RemoteCallFailed, match="static_task blueprint answers no remote calls"):
        runner.on_remote_call(RunView(1, "static_task", {}, TaskHooks()), call("anything", {}))


def test_a_returning_page_starts_from_its_past_calls() -> None:
    runner = runner_for(remote_procedure.NAME)
    stored = remote_procedure.init_task_data(ROW, {})
    assert stored == {"task_data": ROW, "previous_requests": []}
    past = [RemoteRequest("r1", "lookup", '{"q": 1}', '{"found": 2}', 5.0)]
    assert runner.returning_agent_data(stored, past) == {"task_data": ROW, "previous_requests": [
        {"uuid": "r1", "target": "lookup", "args_json": '{"q": 1}', "response_json": '{"found": 2}',
         "timestamp": 5.0}]}


def test_silent_pages_are_taken_once_on_the_redis_clock(redis_client: redis.Redis) -> None:
    presence = Presence(redis_client)
    presence.beat("quiet")
    presence.beat("chatty")
    redis_client.zadd(keys.live_heartbeats_key(), {"quiet": presence.beat("probe") - 5000})
    assert presence.take_silent(2.0) == ["quiet"]
    assert presence.take_silent(2.0) == []  # taken: a second sweep does not see it again
    assert set(presence.watched()) == {"chatty", "probe"}
    assert presence.forget("chatty") and not presence.forget("chatty")


def test_a_call_lease_lives_while_held_and_lapses_without_its_holder(redis_client: redis.Redis) -> None:
    key = keys.remote_call_lease_key(99)
    with CallLease(redis_client, 99, lease_s=0.3):
        began = time.monotonic()
        # Twice the lease: only the renewals keep it; a lapse ends the wait at once and fails.
        wait_for(lambda: not redis_client.exists(key) or time.monotonic() - began > 0.6, timeout_s=5,
                 interval_s=0.01, message="twice the lease to pass")
        assert redis_client.exists(key)
    assert not redis_client.exists(key)


def test_packets_from_pages_are_parsed_or_dropped() -> None:
    assert protocol.parse('{"packet_type": "alive", "subject_id": "a"}') == {"packet_type": "alive",
                                                                             "subject_id": "a"}
    for junk in ("", "not json", "[1, 2]", '{"subject_id": "a"}', '{"packet_type": 3}'):
        assert protocol.parse(junk) is None
    answer = protocol.answer_update("a", "r1", '{"x": 1}')
    assert answer["packet_type"] == "client_bound_live_update"
    assert answer["data"] == {"handles": "r1", "response": '{"x": 1}', "update_id": "r1:answer"}
