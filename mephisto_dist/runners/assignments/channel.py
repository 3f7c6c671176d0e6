"""The runner side of an agent's page (:class:`~mephisto_dist.compat.live_agent.AgentChannel`): messages
from the page come out of the agent's Redis inbox (``runners.live.inbox``), messages to it are published
on its live channel (``runners.live.outbox``) for whichever web process holds its websocket; both are
written to the agent's transcript (``agent_message``) first. Statuses are read from, and written to, the
database through ``db.transitions``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.compat.live_agent import Inbound
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, AgentMessage, OnboardingAgent
from mephisto_dist.db.transitions import move_agent, move_onboarding_agent
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.runners.live import inbox as inbox_entries
from mephisto_dist.runners.live import protocol
from mephisto_dist.runners.live.inbox import Inbox
from mephisto_dist.runners.live.outbox import send_to_agent

IN = "in"
OUT = "out"
STATE = "state"
"""What the runner kept in the agent's state without sending it (a world's ``SUBMIT_WORLD_DATA``)."""


def _now() -> datetime:
    return datetime.now(UTC)


class RunnerChannel:
    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis, run_id: int, *,
                 longest_wait_s: float) -> None:
        self._sessions = sessions
        self._client = client
        self._inbox = Inbox(client)
        self._run_id = run_id
        self._longest_wait_s = longest_wait_s  # under the Redis client's socket timeout
        self._seq: dict[str, int] = {}

    def receive(self, agent_id: str, timeout_s: float) -> Inbound | None:
        entry = self._inbox.take(agent_id, min(timeout_s, self._longest_wait_s))
        if entry is None:
            return None
        kind = entry.get("kind")
        if kind == inbox_entries.ACT:
            return Inbound("act", data=dict(entry.get("data") or {}))
        if kind == inbox_entries.STATUS:
            return Inbound("status", status=str(entry.get("status") or ""))
        if kind == inbox_entries.SUBMIT:
            return Inbound("submit", data=dict(entry.get("data") or {}))
        return Inbound("shutdown")

    def send(self, agent_id: str, data: dict[str, Any]) -> None:
        self._record(agent_id, OUT, data)
        send_to_agent(self._client, agent_id, protocol.live_update(agent_id, data))

    def received(self, agent_id: str, data: Mapping[str, Any]) -> None:
        self._record(agent_id, IN, data)

    def record(self, agent_id: str, data: Mapping[str, Any]) -> None:
        self._record(agent_id, STATE, data)

    def status(self, agent_id: str) -> str:
        with read_transaction(self._sessions) as session:
            found = session.scalar(select(Agent.status).where(Agent.id == agent_id))
            if found is None:
                found = session.scalar(select(OnboardingAgent.status).where(OnboardingAgent.id == agent_id))
            return str(found or "")

    def time_out(self, agent_id: str) -> None:
        self._move(agent_id, AgentStatus.TIMEOUT)

    def update_status(self, agent_id: str, status: str) -> None:
        self._move(agent_id, AgentStatus(status))

    def _move(self, agent_id: str, new: AgentStatus) -> None:
        """The agent (or onboarding agent) from the status it is working in to ``new``, its page told."""
        with transaction(self._sessions) as session:
            if session.get(Agent, agent_id) is not None:
                moved = move_agent(session, agent_id, AgentStatus.IN_TASK, new, now=_now())
            else:
                moved = move_onboarding_agent(session, agent_id, AgentStatus.ONBOARDING, new, now=_now())
        if moved:
            self.tell(agent_id, new)

    def tell(self, agent_id: str, status: AgentStatus) -> None:
        send_to_agent(self._client, agent_id, protocol.status_packet(agent_id, status.value))

    def close(self, agent_ids: list[str]) -> None:
        for agent_id in agent_ids:
            self._inbox.drop(agent_id)

    def _record(self, agent_id: str, direction: str, data: Mapping[str, Any]) -> None:
        with transaction(self._sessions) as session:
            seq = self._seq.get(agent_id)
            if seq is None:
                seq = int(session.scalar(select(func.coalesce(func.max(AgentMessage.seq), 0))
                                         .where(AgentMessage.agent_id == agent_id)) or 0)
            seq += 1
            session.add(AgentMessage(task_run_id=self._run_id, agent_id=agent_id, seq=seq, direction=direction,
                                     data=dict(data), created_at=_now()))
        self._seq[agent_id] = seq
