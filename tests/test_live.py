"""The live channel and remote procedure calls end to end: real web processes serving the websocket, real
Celery workers running the calls, beat's live sweep, a real websocket client speaking mephisto-task's
packets, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, OnboardingAgent, RemoteCall, Unit
from mephisto_dist.queue import LIVE_QUEUE
from mephisto_dist.review.export import unit_records
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.live_page import LivePage
from tests.live_runs import make_remote_run, request_agent
from tests.system import celery_beat, celery_worker, make_runtime, web_server

FAST_SWEEP = {"LIVE_DISCONNECT_S": "2", "REMOTE_CALL_LEASE_S": "1", "LIVE_SWEEP_EVERY_S": "0.3",
              "RUN_SWEEP_EVERY_S": "0.5"}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, **FAST_SWEEP)
    yield rt
    rt.close()


def worker_env(tmp_path: Path, tag: str) -> dict[str, str]:
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    return {"LIVE_TEST_WORKER": tag, "LIVE_TEST_MARKS": str(marks)}


def call_row(rt: Runtime, request_id: str) -> RemoteCall:
    with transaction(rt.sessions) as session:
        row = session.scalar(select(RemoteCall).where(RemoteCall.request_id == request_id))
        assert row is not None
        session.expunge(row)
        return row


@pytest.mark.system
def test_calls_are_answered_across_two_web_processes_and_two_workers(tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=4)
    with ExitStack() as stack:
        webs = [stack.enter_context(web_server(runtime.settings, run_id, tmp_path / f"web{i}.log")) for i in (1, 2)]
        for tag in ("w1", "w2"):
            stack.enter_context(celery_worker(runtime.settings, tmp_path / f"{tag}.log", concurrency=1, name=tag,
                                              env=worker_env(tmp_path, tag)))
        pages = []
        for number, web in enumerate(webs * 2):
            agent = request_agent(web, f"worker{number}")
            assert agent["agent_id"], agent
            assert agent["init_task_data"] == {"task_data": {"index": number, "text": f"item {number}"},
                                               "previous_requests": []}
            pages.append(stack.enter_context(_opened(LivePage(web, agent["agent_id"]))))
        for page in pages:
            wait_for(lambda page=page: "in task" in page.statuses, message="the page's status")
        sent = [(page, page.call("slow", {"seconds": 0.3})) for page in pages for _ in range(3)]
        answers = [page.answer(request_id) for page, request_id in sent]
        assert {answer["worker"] for answer in answers} == {"w1", "w2"}
        # A call sees the calls its agent made before it, and its assignment's row.
        page = pages[0]
        echoed = page.answer(page.call("echo", {"n": 1}))
        assert echoed["echo"] == {"n": 1}
        assert echoed["row"] == {"index": 0, "text": "item 0"}
        assert echoed["previous"] == ["slow", "slow", "slow"]
        assert all(page.heartbeat_answers for page in pages)
        # A page that comes back (through the other web process) gets its past calls in its init data.
        again = request_agent(webs[1], "worker0")
        assert again["agent_id"] == pages[0].agent_id
        assert [r["target"] for r in again["init_task_data"]["previous_requests"]] == ["slow", "slow", "slow", "echo"]
        assert all(r["response_json"] for r in again["init_task_data"]["previous_requests"])
    with transaction(runtime.sessions) as session:
        statuses = set(session.scalars(select(RemoteCall.status)))
        assert statuses == {"answered"}
        stored = session.scalar(select(Agent.init_data).where(Agent.id == pages[0].agent_id))
        assert stored == {"init_data": {"index": 0, "text": "item 0"}}  # the unit_assigned event ran


def _opened(page: LivePage, *, alive: bool = True):  # type: ignore[no-untyped-def]
    from contextlib import contextmanager

    @contextmanager
    def opened() -> Iterator[LivePage]:
        page.open(alive=alive)
        try:
            yield page
        finally:
            page.close()
    return opened()


@pytest.mark.system
def test_a_raising_function_answers_an_error_packet_and_logs_the_traceback(
        tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=1)
    log = tmp_path / "worker.log"
    with (web_server(runtime.settings, run_id, tmp_path / "web.log") as web,
          celery_worker(runtime.settings, log, concurrency=1, env=worker_env(tmp_path, "w1"))):
        agent = request_agent(web, "worker1")
        with _opened(LivePage(web, agent["agent_id"])) as page:
            request_id = page.call("boom", {})
            assert page.answer(request_id) == {"error": "boom failed: ValueError"}
            unknown = page.call("no_such_function", {})
            assert page.answer(unknown) == {"error": "no remote function named 'no_such_function'"}
            # The page goes on working: the next call is answered.
            assert page.answer(page.call("echo", {"after": "error"}))["echo"] == {"after": "error"}
    text = log.read_text()
    assert "Traceback" in text and f"secret internals {request_id}" in text
    row = call_row(runtime, request_id)
    assert row.status == "failed" and "secret" not in (row.response_json or "")


@pytest.mark.system
def test_a_worker_killed_mid_call_is_rerun_once_on_another(tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=1)
    marks = tmp_path / "marks"
    with ExitStack() as stack:
        web = stack.enter_context(web_server(runtime.settings, run_id, tmp_path / "web.log"))
        workers = {tag: stack.enter_context(celery_worker(runtime.settings, tmp_path / f"{tag}.log", concurrency=1,
                                                          name=tag, env=worker_env(tmp_path, tag)))
                   for tag in ("w1", "w2")}
        stack.enter_context(celery_beat(runtime.settings, tmp_path / "beat.log"))
        agent = request_agent(web, "worker1")
        page = stack.enter_context(_opened(LivePage(web, agent["agent_id"])))
        request_id = page.call("slow", {"seconds": 2})
        first = wait_for(lambda: (marks / request_id).exists() and (marks / request_id).read_text(),
                         timeout_s=20, message="the call to start on a worker")
        (marks / request_id).unlink()
        os.killpg(workers[first].pid, signal.SIGKILL)  # the whole worker, mid-call
        answer = page.answer(request_id, timeout_s=30)
        assert answer == {"worker": "w2" if first == "w1" else "w1"}
        row = call_row(runtime, request_id)
        assert (row.status, row.attempts) == ("answered", 2)


@pytest.mark.system
def test_a_call_whose_worker_dies_twice_is_answered_with_an_error(tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=1)
    with ExitStack() as stack:
        web = stack.enter_context(web_server(runtime.settings, run_id, tmp_path / "web.log"))
        for tag in ("w1", "w2"):
            stack.enter_context(celery_worker(runtime.settings, tmp_path / f"{tag}.log", concurrency=1, name=tag,
                                              env=worker_env(tmp_path, tag)))
        stack.enter_context(celery_beat(runtime.settings, tmp_path / "beat.log"))
        agent = request_agent(web, "worker1")
        page = stack.enter_context(_opened(LivePage(web, agent["agent_id"])))
        request_id = page.call("die", {})  # SIGKILLs the pool process running it, every time
        answer = page.answer(request_id, timeout_s=40)
        assert "error" in answer and "stopped twice" in answer["error"]
        row = call_row(runtime, request_id)
        assert (row.status, row.attempts) == ("failed", 2)
        # The workers replaced their dead processes and keep answering.
        assert page.answer(page.call("echo", {}))["echo"] == {}


@pytest.mark.system
def test_a_function_that_never_returns_is_answered_an_error_at_its_limit_and_frees_its_worker(
        tmp_path: Path, database_url: str, redis_url: str) -> None:
    runtime = make_runtime(tmp_path / "data", database_url, redis_url, REMOTE_CALL_TIMEOUT_S="2", **FAST_SWEEP)
    try:
        run_id = make_remote_run(runtime, tmp_path, assignments=1)
        log = tmp_path / "worker.log"
        with (web_server(runtime.settings, run_id, tmp_path / "web.log") as web,
              celery_worker(runtime.settings, log, concurrency=1, env=worker_env(tmp_path, "w1"))):
            agent = request_agent(web, "worker1")
            with _opened(LivePage(web, agent["agent_id"])) as page:
                request_id = page.call("forever", {})
                # The answer mephisto-task's useMephistoRemoteProcedureTask gets when a function raises.
                assert page.answer(request_id, timeout_s=30) == {"error": "forever timed out after 2 s"}
                # The only worker process is free again: it answers the next call.
                assert page.answer(page.call("echo", {"after": "timeout"}))["worker"] == "w1"
        row = call_row(runtime, request_id)
        assert (row.status, row.attempts, row.error) == ("failed", 1, "forever timed out after 2 s")
        assert "Soft time limit (2.0s) exceeded" in log.read_text()
    finally:
        runtime.close()


@pytest.mark.system
def test_a_function_that_ignores_its_soft_limit_is_killed_and_answered_not_rerun(
        tmp_path: Path, database_url: str, redis_url: str) -> None:
    runtime = make_runtime(tmp_path / "data", database_url, redis_url, REMOTE_CALL_TIMEOUT_S="1", **FAST_SWEEP)
    try:
        run_id = make_remote_run(runtime, tmp_path, assignments=1)
        log = tmp_path / "worker.log"
        with ExitStack() as stack:
            web = stack.enter_context(web_server(runtime.settings, run_id, tmp_path / "web.log"))
            stack.enter_context(celery_worker(runtime.settings, log, concurrency=1, env=worker_env(tmp_path, "w1")))
            stack.enter_context(celery_beat(runtime.settings, tmp_path / "beat.log"))
            agent = request_agent(web, "worker1")
            page = stack.enter_context(_opened(LivePage(web, agent["agent_id"])))
            request_id = page.call("stubborn", {})
            # The hard limit kills the pool process; the live sweep finds the call's lease gone after its
            # whole time limit, and answers it rather than sending it round again.
            assert page.answer(request_id, timeout_s=60) == {"error": "stubborn timed out after 1 s"}
            assert page.answer(page.call("echo", {}))["worker"] == "w1"
        row = call_row(runtime, request_id)
        assert (row.status, row.attempts) == ("failed", 1)
        assert "Hard time limit (11.0s) exceeded" in log.read_text()
    finally:
        runtime.close()


def agent_and_unit(rt: Runtime, agent_id: str) -> tuple[str, str, str | None]:
    with transaction(rt.sessions) as session:
        row = session.execute(select(Agent.status, Unit.status, Unit.agent_id)
                              .join(Unit, Unit.id == Agent.unit_id).where(Agent.id == agent_id)).one()
        return str(row[0]), str(row[1]), row[2]


@pytest.mark.system
def test_a_page_back_in_time_keeps_its_unit_and_one_gone_for_good_returns_it_to_the_pool(
        tmp_path: Path, runtime: Runtime) -> None:
    cap = 2
    run_id = make_remote_run(runtime, tmp_path, assignments=4, cap=cap)
    pool = f"run:{run_id}:units"
    assert runtime.limiter.state(pool).held == cap
    with ExitStack() as stack:
        webs = [stack.enter_context(web_server(runtime.settings, run_id, tmp_path / f"web{i}.log")) for i in (1, 2)]
        stack.enter_context(celery_worker(runtime.settings, tmp_path / "worker.log", concurrency=1,
                                          env=worker_env(tmp_path, "w1")))
        stack.enter_context(celery_beat(runtime.settings, tmp_path / "beat.log"))
        staying, leaving = request_agent(webs[0], "staying"), request_agent(webs[0], "leaving")
        assert staying["agent_id"] and leaving["agent_id"]
        assert request_agent(webs[0], "third")["agent_id"] is None  # the cap: two units out at once
        stay_page = LivePage(webs[0], staying["agent_id"]).open()
        leave_page = LivePage(webs[0], leaving["agent_id"]).open()
        wait_for(lambda: stay_page.heartbeat_answers and leave_page.heartbeat_answers, message="heartbeats")
        stay_page.close()
        leave_page.close()
        # The staying page comes back at once, through the other web process, and keeps beating.
        stay_page = stack.enter_context(_opened(LivePage(webs[1], staying["agent_id"])))
        # The leaving page's silence passes the limit; the sweep moves its unit back to the pool.
        wait_for(lambda: agent_and_unit(runtime, leaving["agent_id"])[0] == "disconnect", timeout_s=20,
                 message="the silent page's agent to be disconnected")
        assert agent_and_unit(runtime, leaving["agent_id"])[1:] == ("launched", None)
        assert agent_and_unit(runtime, staying["agent_id"]) == ("in task", "assigned", staying["agent_id"])
        assert stay_page.answer(stay_page.call("echo", {"still": "here"}))["echo"] == {"still": "here"}
        # The cap holds: the freed unit is launched again (still counted), and goes to the next worker.
        state = runtime.limiter.state(pool)
        assert state.held == cap
        third = request_agent(webs[1], "third")
        assert third["agent_id"] is not None
        assert request_agent(webs[1], "fourth")["agent_id"] is None
        # The page that left is told so when it comes back, and its registration no longer works.
        back = stack.enter_context(_opened(LivePage(webs[1], leaving["agent_id"])))
        wait_for(lambda: "disconnect" in back.statuses, message="the returning page to hear it was disconnected")
        assert request_agent(webs[1], "leaving")["agent_id"] is None
        assert runtime.limiter.state(pool).held == cap


@pytest.mark.system
def test_calls_are_exported_with_the_agents_data(tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=1)
    with (web_server(runtime.settings, run_id, tmp_path / "web.log") as web,
          celery_worker(runtime.settings, tmp_path / "worker.log", concurrency=1, env=worker_env(tmp_path, "w1"))):
        agent = request_agent(web, "worker1")
        with _opened(LivePage(web, agent["agent_id"])) as page:
            first = page.call("echo", {"q": 1})
            page.answer(first)
        import httpx

        httpx.post(web + "/submit_task", json={"USED_AGENT_ID": agent["agent_id"], "final_data": {"done": True}},
                   timeout=10).raise_for_status()
    with transaction(runtime.sessions) as session:
        (record,) = list(unit_records(session, [run_id]))
    assert record["data"]["outputs"] == {"done": True}
    (call,) = record["data"]["requests"]
    assert call["request_id"] == first and call["target"] == "echo" and call["status"] == "answered"
    assert '"q": 1' in call["args_json"] and '"echo"' in call["response_json"]


@pytest.mark.system
def test_a_reloaded_page_whose_call_leaves_before_its_alive_is_answered(tmp_path: Path, runtime: Runtime) -> None:
    """mephisto-task's send queue is ordered by the time a packet was queued: a call made while the reloaded
    page's new socket is still opening goes out before the ``alive`` queued once it opened. Mephisto's router
    routes the call by its subject all the same; so must we."""
    run_id = make_remote_run(runtime, tmp_path, assignments=1)
    with (web_server(runtime.settings, run_id, tmp_path / "web.log") as web,
          celery_worker(runtime.settings, tmp_path / "worker.log", concurrency=1, env=worker_env(tmp_path, "w1"))):
        agent_id = request_agent(web, "worker1")["agent_id"]
        with _opened(LivePage(web, agent_id)) as page:
            first = page.call("echo", {"n": 1})
            assert page.answer(first)["echo"] == {"n": 1}
        # The reload: the old socket is gone, a new page (with no memory of the first call) opens a new one.
        with _opened(LivePage(web, agent_id), alive=False) as reloaded:
            second = reloaded.call("echo", {"n": 2})
            reloaded.alive()
            assert reloaded.answer(second)["echo"] == {"n": 2}
            assert reloaded.answer(first)["echo"] == {"n": 1}  # resent when the page came back
            assert "in task" in reloaded.statuses
            # And the calls after it are answered as usual.
            assert reloaded.answer(reloaded.call("echo", {"n": 3}))["previous"] == ["echo", "echo"]


@pytest.mark.system
def test_a_page_whose_agent_times_out_is_told_once(tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=1, duration_s=1)
    with ExitStack() as stack:
        web = stack.enter_context(web_server(runtime.settings, run_id, tmp_path / "web.log"))
        stack.enter_context(celery_worker(runtime.settings, tmp_path / "worker.log", concurrency=1,
                                          env=worker_env(tmp_path, "w1")))
        stack.enter_context(celery_beat(runtime.settings, tmp_path / "beat.log"))
        agent = request_agent(web, "worker1")
        page = stack.enter_context(_opened(LivePage(web, agent["agent_id"])))
        # Beat times the agent out after assignment_duration_in_seconds; the live sweep tells the page.
        wait_for(lambda: "timeout" in page.statuses, timeout_s=30, message="the page to hear it timed out")
        assert agent_and_unit(runtime, agent["agent_id"])[:2] == ("timeout", "launched")
        beats = page.heartbeat_answers
        wait_for(lambda: page.heartbeat_answers >= beats + 10, timeout_s=30, message="more heartbeats")
        assert page.statuses.count("timeout") == 1  # the page keeps beating, and is not told again


@pytest.mark.system
def test_an_onboarding_page_calls_with_the_onboarding_data_then_the_task_page_with_its_row(
        tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=1, onboarding=f"rp-onboarded-{tmp_path.name}")
    with (web_server(runtime.settings, run_id, tmp_path / "web.log") as web,
          celery_worker(runtime.settings, tmp_path / "worker.log", concurrency=1, env=worker_env(tmp_path, "w1"))):
        onboarding = request_agent(web, "newcomer")
        assert onboarding["agent_id"].startswith("onboarding_")
        with _opened(LivePage(web, onboarding["agent_id"])) as page:
            wait_for(lambda: "onboarding" in page.statuses, message="the onboarding page's status")
            assert page.answer(page.call("echo", {}))["row"] == {"question": "What is 2 + 2?"}
        import httpx

        task = httpx.post(web + "/submit_onboarding", json={"USED_AGENT_ID": onboarding["agent_id"],
                                                             "onboarding_data": {"answer": "4"}}, timeout=10)
        agent_id = task.json()["data"]["agent_id"]
        assert agent_id and not agent_id.startswith("onboarding_")
        with _opened(LivePage(web, agent_id)) as page:
            assert page.answer(page.call("echo", {}))["row"] == {"index": 0, "text": "item 0"}


def onboarding_status(rt: Runtime, agent_id: str) -> str:
    with transaction(rt.sessions) as session:
        return str(session.scalar(select(OnboardingAgent.status).where(OnboardingAgent.id == agent_id)))


@pytest.mark.system
def test_an_onboarding_page_that_falls_silent_is_disconnected_and_one_that_beats_is_not(
        tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=2, onboarding=f"rp-silent-{tmp_path.name}")
    with ExitStack() as stack:
        web = stack.enter_context(web_server(runtime.settings, run_id, tmp_path / "web.log"))
        stack.enter_context(celery_worker(runtime.settings, tmp_path / "worker.log", concurrency=1,
                                          env=worker_env(tmp_path, "w1")))
        stack.enter_context(celery_beat(runtime.settings, tmp_path / "beat.log"))
        staying, leaving = request_agent(web, "staying")["agent_id"], request_agent(web, "leaving")["agent_id"]
        assert staying.startswith("onboarding_") and leaving.startswith("onboarding_")
        stay_page = stack.enter_context(_opened(LivePage(web, staying)))
        leave_page = LivePage(web, leaving).open()
        wait_for(lambda: stay_page.heartbeat_answers and leave_page.heartbeat_answers, message="heartbeats")
        leave_page.close()
        wait_for(lambda: onboarding_status(runtime, leaving) == "disconnect", timeout_s=20,
                 message="the silent onboarding page's agent to be disconnected")
        assert onboarding_status(runtime, staying) == "onboarding"
        assert stay_page.answer(stay_page.call("echo", {}))["row"] == {"question": "What is 2 + 2?"}
        # Its late answers are refused; the page that comes back hears it was disconnected, and the worker
        # who asks again starts a fresh onboarding.
        import httpx

        late = httpx.post(web + "/submit_onboarding", json={"USED_AGENT_ID": leaving,
                                                             "onboarding_data": {"answer": "4"}}, timeout=10)
        assert late.status_code == 409, late.text
        back = stack.enter_context(_opened(LivePage(web, leaving)))
        wait_for(lambda: "disconnect" in back.statuses, message="the returning page to hear it was disconnected")
        again = request_agent(web, "leaving")["agent_id"]
        assert again.startswith("onboarding_") and again != leaving
        assert onboarding_status(runtime, staying) == "onboarding"


@pytest.mark.system
def test_remote_calls_have_a_queue_of_their_own_that_a_worker_consumes_by_default(
        tmp_path: Path, runtime: Runtime) -> None:
    run_id = make_remote_run(runtime, tmp_path, assignments=1)
    with web_server(runtime.settings, run_id, tmp_path / "web.log") as web:
        # A worker for the live queue only answers calls; the default queue's tasks are not its business.
        with celery_worker(runtime.settings, tmp_path / "calls.log", concurrency=1, name="calls",
                           env=worker_env(tmp_path, "calls"), queues=[LIVE_QUEUE]):
            agent_id = request_agent(web, "worker1")["agent_id"]  # sends unit_assigned (default queue)
            with _opened(LivePage(web, agent_id)) as page:
                assert page.answer(page.call("echo", {"n": 1}))["worker"] == "calls"
            assert runtime.queue.waiting() == 1
        assert not stored_init_data(runtime, agent_id)
        # A worker started without -Q consumes both queues.
        with celery_worker(runtime.settings, tmp_path / "all.log", concurrency=1, name="all",
                           env=worker_env(tmp_path, "all")):
            wait_for(lambda: stored_init_data(runtime, agent_id), message="the unit_assigned event")
            with _opened(LivePage(web, agent_id)) as page:
                assert page.answer(page.call("echo", {"n": 2}))["worker"] == "all"
        assert runtime.queue.waiting() == 0


def stored_init_data(rt: Runtime, agent_id: str) -> object:
    with transaction(rt.sessions) as session:
        return session.scalar(select(Agent.init_data).where(Agent.id == agent_id))
