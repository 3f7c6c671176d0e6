"""An onboarding agent's onboarding played by its run's hosted runner (``run_onboarding``: a parlai_chat
onboarding world), in a thread of a runner worker, in Mephisto's order (``TaskRunner.execute_onboarding``
then ``WorkerPool``'s validation):

1. the runner plays the world with the onboarding page (its inbox and live channel, as an assignment's
   agents), then sets the agent ``waiting``, on which bootstrap-chat submits the onboarding;
2. the web process handling ``/submit_onboarding`` pushes the submit to the agent's inbox and waits for
   the verdict (:func:`wait_for_verdict`); the runner's ``await_submit`` takes it and ``run_onboarding``
   returns;
3. the runner judges the onboarding (the blueprint's ``validate_onboarding`` on the agent's state: its
   messages and the world's data) and pushes the verdict; the web records it and gives the worker a unit.

An absent page (disconnected, timed out) ends the onboarding as Mephisto does: the onboarding agent
``disconnect`` unless it already ended, ``cleanup_onboarding``; the worker starts again from scratch. A
forced stop of the run (``AgentShutdownError``) first calls the run's TaskRunner ``shutdown()`` once in this
process (:func:`~.host.shut_down_runner`).
One player per onboarding agent: the runner takes the onboarding's lease (``L:onboarding:<id>:lease``,
``SET NX``, renewed and fenced as an assignment's, :mod:`.lease`), then marks it played
(``L:onboarding:<id>:runner``, a day): a repeated start plays nothing. A runner that dies mid-world lets the
lease lapse; the live sweep finds the onboarding played, its lease gone, claims the key and expires the
onboarding agent (:func:`~.recovery.end_lost_onboardings`, its page told): the worker starts again from
scratch, as after a disconnect. One queued for a runner worker (not played yet) is left waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import select

from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.compat.data_model import Worker as WorkerView
from mephisto_dist.compat.exceptions import AbsentAgentError, AgentShutdownError
from mephisto_dist.compat.live_agent import Agent as LiveAgent
from mephisto_dist.compat.task_runner import RunningOnboarding, TaskRunner
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import OnboardingAgent, TaskRun, Worker
from mephisto_dist.db.transitions import move_onboarding_agent
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.limiter import keys
from mephisto_dist.runners.assignments.channel import RunnerChannel
from mephisto_dist.runners.assignments.host import runner_of, shut_down_runner
from mephisto_dist.runners.assignments.lease import LeaseLost, RunnerLease
from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)

PLAYER_TTL_S = 24 * 60 * 60
VERDICT_TTL_S = 600
NOT_STARTED = "not started"
JUDGED = "judged"
ENDED_EARLY = "ended early"
FAILED = "failed"
LOST = "lease lost"


def run_onboarding(rt: Runtime, agent_id: str, hooks_of: Callable[[TaskRun], TaskHooks]) -> str:
    with read_transaction(rt.sessions) as session:
        row = session.execute(select(OnboardingAgent.status, OnboardingAgent.task_run_id, Worker.id,
                                     Worker.worker_name)
                              .join(Worker, Worker.id == OnboardingAgent.worker_id)
                              .where(OnboardingAgent.id == agent_id)).first()
        run = None if row is None else session.get(TaskRun, row.task_run_id)
    if row is None or run is None or row.status != AgentStatus.ONBOARDING.value:
        return NOT_STARTED
    lease = RunnerLease.of_onboarding(rt.redis, agent_id)
    if rt.redis.exists(keys.onboarding_runner(agent_id)) or not lease.claim():
        return NOT_STARTED
    rt.redis.set(keys.onboarding_runner(agent_id), "played", ex=PLAYER_TTL_S)
    with lease:
        return _play(rt, run, agent_id, WorkerView(str(row.worker_name), int(row.id)), hooks_of(run), lease)


def _play(rt: Runtime, run: TaskRun, agent_id: str, worker: WorkerView, hooks: TaskHooks, lease: RunnerLease) -> str:
    runner = runner_of(hooks, run)
    channel = RunnerChannel(rt.sessions, rt.redis, run.id, longest_wait_s=max(0.1, rt.settings.redis_timeout_s / 2),
                            fence=lease)
    agent = LiveAgent(agent_id, worker, None, channel, init_data=dict(hooks.onboarding_data))
    runner.running_onboardings[agent_id] = RunningOnboarding(agent)
    try:
        runner.run_onboarding(agent)
    except LeaseLost:
        log.warning("onboarding %s: this runner's lease lapsed (its process paused past it?) and the live sweep "
                    "ended it: stopped here, touching nothing", agent_id)
        _cleanup(runner, agent)
        return LOST
    except AbsentAgentError as absent:
        log.info("onboarding %s ended early: %s", agent_id, absent.message)
        if lease.lost:
            _cleanup(runner, agent)
            return LOST
        if isinstance(absent, AgentShutdownError):
            shut_down_runner(run.id, runner)
        _disconnect(rt, channel, agent_id)
        _cleanup(runner, agent)
        return ENDED_EARLY
    except Exception:
        log.exception("run_onboarding failed for %s", agent_id)
        _cleanup(runner, agent)
        return FAILED
    finally:
        runner.running_onboardings.pop(agent_id, None)
        if not lease.lost:  # the inbox is for the worker's next attempt otherwise
            channel.close([agent_id])
    passed = _verdict(runner, hooks, worker, agent)
    try:
        lease.check()
    except LeaseLost:
        return LOST
    rt.redis.rpush(keys.onboarding_verdict(agent_id), "1" if passed else "0")
    rt.redis.expire(keys.onboarding_verdict(agent_id), VERDICT_TTL_S)
    return JUDGED


def _verdict(runner: TaskRunner, hooks: TaskHooks, worker: WorkerView, agent: LiveAgent) -> bool:
    """The blueprint's ``validate_onboarding(worker, onboarding_agent)`` (parlai_chat's: the world
    module's, on the agent's data), else the shared state's on the agent's data. A failing validator
    fails the worker: the onboarding cannot be left open, its world is over."""
    try:
        blueprint_check = getattr(runner, "validate_onboarding", None)
        if callable(blueprint_check):
            return bool(blueprint_check(worker, agent))
        shared_check = getattr(hooks.shared_state, "validate_onboarding", None)
        return True if shared_check is None else bool(shared_check(agent.state.get_data()))
    except Exception:
        log.exception("validate_onboarding failed for %s: the worker does not pass", agent.db_id)
        return False


def _disconnect(rt: Runtime, channel: RunnerChannel, agent_id: str) -> None:
    with transaction(rt.sessions) as session:
        moved = move_onboarding_agent(session, agent_id, (AgentStatus.ONBOARDING, AgentStatus.WAITING),
                                      AgentStatus.DISCONNECT, now=datetime.now(UTC))
    if moved:
        channel.tell(agent_id, AgentStatus.DISCONNECT)


def _cleanup(runner: TaskRunner, agent: Any) -> None:
    try:
        runner.cleanup_onboarding(agent)
    except Exception:
        log.exception("cleanup_onboarding failed for %s", agent.db_id)


def wait_for_verdict(client: redis.Redis, agent_id: str, *, wait_s: float, step_s: float) -> bool | None:
    """The runner's verdict on a submitted onboarding (web side), waiting up to ``wait_s`` in BLPOPs of
    ``step_s`` (under the client's socket timeout); None when none came (the runner is gone)."""
    key = keys.onboarding_verdict(agent_id)
    waited = 0.0
    while waited < wait_s:
        found: Any = client.blpop([key], timeout=step_s)
        if found is not None:
            return bool(found[1] in (b"1", "1"))
        waited += step_s
    return None
