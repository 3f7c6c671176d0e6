"""The runner side of an agent's page (:class:`~mephisto_dist.compat.live_agent.AgentChannel`): messages
from the page come out of the agent's Redis inbox (``runners.live.inbox``), messages to it are published
on its live channel (``runners.live.outbox``) for whichever web process holds its websocket; both are
written to the agent's transcript (``agent_message``) first. Statuses are read from, and written to, the
database through ``db.transitions``.

A page's message stays in the agent's inbox (its ``taking`` list) from the moment the runner takes it until
it is in the transcript, so one taken by a runner that died before it stored it is given back to the
restarted runner (:func:`give_back_taken`). A restarted runner's channel replays the stored transcript
first (:mod:`.replay`).

An assignment runner's channel is fenced by its lease (:mod:`.lease`): before it takes a page's message,
stores or sends a line, or moves a status, it checks the lease is still its own, and raises
:class:`~.lease.LeaseLost` otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.compat.live_agent import Inbound
from mephisto_dist.db.engine import read_transaction, single_statement, transaction
from mephisto_dist.db.models import Agent, AgentMessage, OnboardingAgent
from mephisto_dist.db.transitions import move_agent, move_onboarding_agent
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.runners.assignments.lease import RunnerLease
from mephisto_dist.runners.assignments.replay import IN, OUT, STATE, Replay
from mephisto_dist.runners.live import inbox as inbox_entries
from mephisto_dist.runners.live import protocol
from mephisto_dist.runners.live.inbox import Inbox
from mephisto_dist.runners.live.outbox import send_to_agent


def _now() -> datetime:
    return datetime.now(UTC)


class RunnerChannel:
    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis, run_id: int, *,
                 longest_wait_s: float, replay: Replay | None = None, fence: RunnerLease | None = None) -> None:
        self._sessions = sessions
        self._fence = fence
        self._replay = replay
        self._client = client
        self._inbox = Inbox(client)
        self._run_id = run_id
        self._longest_wait_s = longest_wait_s  # under the Redis client's socket timeout
        self._seq: dict[str, int] = {}

    def check_lease(self) -> None:
        """Raise :class:`~.lease.LeaseLost` if this channel's runner no longer holds its lease."""
        if self._fence is not None:
            self._fence.check()

    def receive(self, agent_id: str, timeout_s: float) -> Inbound | None:
        said = None if self._replay is None else self._replay.next_said(agent_id)
        if said is not None:
            return Inbound("act", data=said)
        self.check_lease()
        entry = self._inbox.take(agent_id, min(timeout_s, self._longest_wait_s))
        if entry is None:
            return None
        kind = entry.get("kind")
        if kind == inbox_entries.ACT:
            return Inbound("act", data=dict(entry.get("data") or {}))  # taken for good once stored (received)
        self._inbox.taken(agent_id)
        if kind == inbox_entries.STATUS:
            return Inbound("status", status=str(entry.get("status") or ""))
        if kind == inbox_entries.SUBMIT:
            return Inbound("submit", data=dict(entry.get("data") or {}))
        return Inbound("shutdown")

    def send(self, agent_id: str, data: dict[str, Any]) -> None:
        if self._replay is not None and self._replay.already_sent(agent_id):
            return
        self.check_lease()
        self._record(agent_id, OUT, data)
        send_to_agent(self._client, agent_id, protocol.live_update(agent_id, data))

    def received(self, agent_id: str, data: Mapping[str, Any]) -> None:
        if self._replay is not None and self._replay.taken(agent_id):
            return
        self.check_lease()
        self._record(agent_id, IN, data)
        self._inbox.taken(agent_id)

    def record(self, agent_id: str, data: Mapping[str, Any]) -> None:
        if self._replay is not None and self._replay.already_kept(agent_id):
            return
        self.check_lease()
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
        self.check_lease()
        with transaction(self._sessions) as session:
            if session.get(Agent, agent_id) is not None:
                moved = move_agent(session, agent_id, AgentStatus.IN_TASK, new, now=_now())
            else:
                moved = move_onboarding_agent(session, agent_id, AgentStatus.ONBOARDING, new, now=_now())
        if moved:
            self.tell(agent_id, new)

    def tell(self, agent_id: str, status: AgentStatus) -> None:
        self.check_lease()
        send_to_agent(self._client, agent_id, protocol.status_packet(agent_id, status.value))

    def close(self, agent_ids: list[str]) -> None:
        for agent_id in agent_ids:
            self._inbox.drop(agent_id)

    def _record(self, agent_id: str, direction: str, data: Mapping[str, Any]) -> None:
        """One line of the agent's transcript: one insert, atomic by itself (autocommit on PostgreSQL),
        past the ORM's unit of work, which was a fifth of a runner worker's CPU at a hundred chats. Only
        this runner writes the agent's lines, so its next ``seq`` is known here after the first."""
        seq = self._seq.get(agent_id)
        if seq is None:
            with read_transaction(self._sessions) as session:
                seq = int(session.scalar(select(func.coalesce(func.max(AgentMessage.seq), 0))
                                         .where(AgentMessage.agent_id == agent_id)) or 0)
        seq += 1
        with single_statement(self._sessions) as connection:
            connection.execute(_INSERT_LINE, {"task_run_id": self._run_id, "agent_id": agent_id, "seq": seq,
                                              "direction": direction, "data": dict(data), "created_at": _now()})
        self._seq[agent_id] = seq


_INSERT_LINE = insert(AgentMessage)


def stored_replay(sessions: sessionmaker[Session], agent_ids: list[str]) -> Replay:
    """The agents' stored transcripts, to replay in a restarted runner."""
    with read_transaction(sessions) as session:
        rows = session.execute(select(AgentMessage.agent_id, AgentMessage.direction, AgentMessage.data)
                               .where(AgentMessage.agent_id.in_(agent_ids))
                               .order_by(AgentMessage.agent_id, AgentMessage.seq)).all()
    return Replay((str(agent_id), str(direction), dict(data or {})) for agent_id, direction, data in rows)


def give_back_taken(client: redis.Redis, agent_ids: list[str], replay: Replay) -> None:
    """Messages a dead runner took from the agents' inboxes but had not stored go back to the front of
    their inboxes, for the restarted runner; one it had stored is in the replay already."""
    inbox = Inbox(client)
    for agent_id in agent_ids:
        inbox.give_back(agent_id, replay.said_update_ids(agent_id))
