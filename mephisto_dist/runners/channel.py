"""The live channel's requests, apart from the websocket itself: who a page is, what it missed while it
was away, and a remote call from it (recorded, then run on the Celery workers)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, AgentMessage, OnboardingAgent
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.errors import RequestError
from mephisto_dist.queue import REMOTE_CALL
from mephisto_dist.runners.assignments.onboarding import wait_for_verdict
from mephisto_dist.runners.live import calls
from mephisto_dist.runners.live.inbox import Inbox
from mephisto_dist.work.served import Served, now


def agent_status(served: Served, agent_id: str) -> str:
    """The status of the page's agent; RequestError when it is not an agent of the served run."""
    run = served.run()
    with read_transaction(served.runtime.sessions) as session:
        return _status_in_run(session, run.run_id, agent_id)


def _status_in_run(session: Session, run_id: int, agent_id: str) -> str:
    """The status of an agent (or, since Mephisto's remote procedure tasks answer calls during onboarding
    too, an onboarding agent) of this run; RequestError for any other id."""
    row = session.execute(select(Agent.status, Agent.task_run_id).where(Agent.id == agent_id)).first()
    if row is None:
        row = session.execute(select(OnboardingAgent.status, OnboardingAgent.task_run_id)
                              .where(OnboardingAgent.id == agent_id)).first()
    if row is None or row.task_run_id != run_id:
        raise RequestError(f"unknown agent id {agent_id!r}", 404)
    return str(row.status)


def missed_answers(served: Served, agent_id: str) -> list[tuple[str, str]]:
    with read_transaction(served.runtime.sessions) as session:
        return calls.settled_answers(session, agent_id)


def missed_messages(served: Served, agent_id: str) -> list[dict[str, Any]]:
    """What a hosted runner sent the agent's page so far, in order: a page that connects after its runner
    started (a world greets at once) or comes back gets them again (mephisto-task drops an ``update_id``
    it has seen)."""
    if not served.run().hooks.hosts_assignments:
        return []
    with read_transaction(served.runtime.sessions) as session:
        return [dict(data) for data in session.scalars(
            select(AgentMessage.data).where(AgentMessage.agent_id == agent_id, AgentMessage.direction == "out")
            .order_by(AgentMessage.seq))]


_CALLING = frozenset({AgentStatus.IN_TASK.value, AgentStatus.ONBOARDING.value})


def live_update(served: Served, agent_id: str, data: dict[str, Any]) -> bool:
    """A page's ``mephisto_bound_live_update``. A remote call (``request_id``, ``target``, ``args``) is
    recorded and enqueued after the commit; True when it was new. Any other message goes to the agent's
    hosted runner, if the run has one (:func:`_message_for_runner`)."""
    request_id, target = data.get("request_id"), data.get("target")
    if not isinstance(request_id, str) or not request_id or not isinstance(target, str) or not target:
        return _message_for_runner(served, agent_id, data)
    args = data.get("args")
    args_json = args if isinstance(args, str) else json.dumps(args if args is not None else {})
    run = served.run()
    with transaction(served.runtime.sessions) as session:
        status = _status_in_run(session, run.run_id, agent_id)
        if status not in _CALLING:
            raise RequestError(f"agent {agent_id} is {status}: its calls are no longer answered", 409)
        call_id, created = calls.record_call(session, calls.NewCall(run.run_id, agent_id, request_id, target,
                                                                    args_json), now=now())
    if created:
        served.runtime.queue.enqueue(REMOTE_CALL, call_id)
    return created


_WAITING_OR_WORKING = frozenset({AgentStatus.WAITING.value, AgentStatus.IN_TASK.value,
                                 AgentStatus.ONBOARDING.value})


def _message_for_runner(served: Served, agent_id: str, data: dict[str, Any]) -> bool:
    """A message for a task script's TaskRunner: pushed to the agent's inbox, where its runner's ``act``
    takes it (a message sent while the agent waits for partners is kept for the runner, as Mephisto
    queues it). True when pushed; False without a hosted runner, or for a repeat."""
    run = served.run()
    if not run.hooks.hosts_assignments:
        return False
    with read_transaction(served.runtime.sessions) as session:
        status = _status_in_run(session, run.run_id, agent_id)
    if status not in _WAITING_OR_WORKING:
        raise RequestError(f"agent {agent_id} is {status}: its messages are no longer read", 409)
    return Inbox(served.runtime.redis).push_message(agent_id, data)


ONBOARDING_VERDICT_WAIT_S = 30.0
"""How long ``/submit_onboarding`` waits for the runner's verdict on an onboarding world."""


def onboarding_verdict(served: Served, agent_id: str, data: dict[str, Any]) -> bool | None:
    """For a run whose hosted runner plays onboarding worlds: hand the page's onboarding submit to the
    runner (its ``await_submit``) and wait for its ``validate_onboarding`` verdict. None when the onboarding
    is already decided (a repeated submit: the first verdict stands)."""
    run = served.run()
    with read_transaction(served.runtime.sessions) as session:
        status = _status_in_run(session, run.run_id, agent_id)
    if status not in _ONBOARDING_OPEN:
        return None
    Inbox(served.runtime.redis).push_submit(agent_id, data)
    verdict = wait_for_verdict(served.runtime.redis, agent_id, wait_s=ONBOARDING_VERDICT_WAIT_S,
                               step_s=max(0.1, min(1.0, served.runtime.settings.redis_timeout_s / 2)))
    if verdict is None:
        raise RequestError("the onboarding's runner did not answer: try again in a moment", 503)
    return verdict


_ONBOARDING_OPEN = frozenset({AgentStatus.ONBOARDING.value, AgentStatus.WAITING.value})
