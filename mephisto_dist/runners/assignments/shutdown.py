"""A forced stop reaching the runners (Mephisto's ``TaskRunner.shutdown()`` on a second Ctrl-C or
``shutdown --force``).

The stopping command pushes a shutdown entry to the inbox (``runners.live.inbox``) of every agent a runner
of the run holds now: the agents of an assignment whose lease says its runner is running, and onboarding
agents whose onboarding is being played. It does so before it disconnects the agents and expires their
units (``runs.lifecycle.force_expire``), so a runner that finds its agent gone finds the shutdown with it
and raises ``AgentShutdownError`` rather than a disconnect. In each runner worker the first runner thread of
the run to see it calls the run's TaskRunner ``shutdown()`` once (:func:`shut_down_runner`), which shuts
down every agent that instance runs; each thread then calls its ``cleanup_*``. The statuses and units are
the stop's (agents ``disconnect``, units ``expired``, nothing paid), so the runners move none.
"""

from __future__ import annotations

import logging

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Agent, OnboardingAgent
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.limiter import keys
from mephisto_dist.runners.assignments.lease import is_running
from mephisto_dist.runners.live.inbox import Inbox

log = logging.getLogger(__name__)

_HELD = (AgentStatus.IN_TASK.value, AgentStatus.PARTNER_DISCONNECT.value)


def shut_down_runners(sessions: sessionmaker[Session], client: redis.Redis, run_id: int) -> int:
    """Tell every runner of the run holding an agent now to shut down; how many agents were told."""
    with read_transaction(sessions) as session:
        seated = session.execute(select(Agent.id, Agent.assignment_id).where(
            Agent.task_run_id == run_id, Agent.status.in_(_HELD))).all()
        onboarding = list(session.scalars(select(OnboardingAgent.id).where(
            OnboardingAgent.task_run_id == run_id, OnboardingAgent.status == AgentStatus.ONBOARDING.value)))
    probe = client.pipeline(transaction=False)
    for _, assignment_id in seated:
        probe.get(keys.assignment_runner_lease(int(assignment_id)))
    for agent_id in onboarding:
        probe.exists(keys.onboarding_runner(agent_id))
    found = probe.execute()
    leases, players = found[:len(seated)], found[len(seated):]
    hosted = [str(agent_id) for (agent_id, _), lease in zip(seated, leases, strict=True)
              if is_running(lease)]
    hosted += [str(agent_id) for agent_id, playing in zip(onboarding, players, strict=True) if playing]
    inbox = Inbox(client)
    for agent_id in hosted:
        inbox.push_shutdown(agent_id)
    if hosted:
        log.info("task run %s: %d hosted agent(s) told to shut down", run_id, len(hosted))
    return len(hosted)
