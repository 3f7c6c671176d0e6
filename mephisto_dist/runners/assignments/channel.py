"""The runner side of an agent's page (:class:`~mephisto_dist.compat.live_agent.AgentChannel`): messages
from the page come out of the agent's Redis inbox (``runners.live.inbox``), messages to it are published
on its live channel (``runners.live.outbox``) for whichever web process holds its websocket; both are
written to the agent's transcript (``agent_message``) first. Statuses are read from, and written to, the
database through ``db.transitions``.

A page's message stays in the agent's inbox (its ``taking`` list) from the moment the runner takes it until
it is in the transcript, so one taken by a runner that died before it stored it is given back to the
restarted runner (:func:`give_back_taken`). A restarted runner's channel replays the stored transcript
first (:mod:`.replay`).

A page's message taken is stored with what the runner does next (its next message sent, state kept, take
or status move), in one batch of the process's transcript writer (:mod:`.transcript`), which also frees
it from the ``taking`` list and publishes the message sent, in one round trip: a chat's turn costs the
runner a share of one commit and of one pipeline, not two commits and four round trips. Until then it is
in the ``taking`` list, so a runner that dies in between loses nothing.

An assignment runner's channel is fenced by its lease (:mod:`.lease`): before it takes a page's message,
stores or sends a line, or moves a status, it checks the lease is still its own, and raises
:class:`~.lease.LeaseLost` otherwise."""

from __future__ import annotations

import json
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
from mephisto_dist.limiter import keys
from mephisto_dist.runners.assignments.lease import LeaseLost, RunnerLease
from mephisto_dist.runners.assignments.replay import IN, OUT, STATE, Replay
from mephisto_dist.runners.assignments.transcript import NotSent, writer_of
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
        self._writer = writer_of(sessions, client)
        self._received: list[tuple[str, dict[str, Any]]] = []  # taken, stored with the next write

    def check_lease(self) -> None:
        """Raise :class:`~.lease.LeaseLost` if this channel's runner no longer holds its lease."""
        if self._fence is not None:
            self._fence.check()

    def receive(self, agent_id: str, timeout_s: float) -> Inbound | None:
        said = None if self._replay is None else self._replay.next_said(agent_id)
        if said is not None:
            return Inbound("act", data=said)
        self.check_lease()
        self._store_received()  # before a wait that may be long, and before its list is moved to again
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
        self._write((agent_id, OUT, data),
                    published=(keys.agent_channel(agent_id), json.dumps(protocol.live_update(agent_id, data))))

    def received(self, agent_id: str, data: Mapping[str, Any]) -> None:
        """The page's message taken by ``act``: stored with the runner's next write (it stays in the
        agent's ``taking`` list until then)."""
        if self._replay is not None and self._replay.taken(agent_id):
            return
        self.check_lease()
        self._received.append((agent_id, dict(data)))

    def record(self, agent_id: str, data: Mapping[str, Any]) -> None:
        if self._replay is not None and self._replay.already_kept(agent_id):
            return
        self.check_lease()
        self._write((agent_id, STATE, data))

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
        self._store_received()
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
        """The runner ended holding its lease: what it took and has not stored yet is stored, then the
        agents' inboxes go."""
        try:
            self.check_lease()
            self._store_received()
        except LeaseLost:
            return
        for agent_id in agent_ids:
            self._inbox.drop(agent_id)

    def _store_received(self) -> None:
        self._write()

    def _write(self, *lines: tuple[str, str, Mapping[str, Any]], published: tuple[str, str] | None = None) -> None:
        """``lines`` (agent, direction, data), after the page messages taken and not stored yet (numbered
        first: they came first), in one batch of the process's transcript writer, which then frees those
        messages from their ``taking`` lists and publishes ``published``. Only this runner writes its
        agents' lines, so their ``seq`` are known here."""
        taken, self._received = self._received, []
        stored: list[dict[str, Any]] = []
        try:
            stored += [self._line(agent_id, IN, data) for agent_id, data in taken]
            stored += [self._line(agent_id, direction, data) for agent_id, direction, data in lines]
            self._writer.write(stored, freed=[keys.agent_inbox_taking(agent_id) for agent_id, _ in taken],
                               published=() if published is None else (published,))
        except NotSent as failed:
            raise (failed.__cause__ or failed) from None  # stored: only Redis failed, as a send did before
        except BaseException:
            for line in stored:  # not stored: the same numbers go to the next attempt
                self._seq[line["agent_id"]] = min(self._seq[line["agent_id"]], line["seq"] - 1)
            self._received = taken + self._received
            raise

    def _line(self, agent_id: str, direction: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """The agent's next transcript line (its ``seq`` is read once, then counted here)."""
        seq = self._seq.get(agent_id)
        if seq is None:
            with read_transaction(self._sessions) as session:
                seq = int(session.scalar(select(func.coalesce(func.max(AgentMessage.seq), 0))
                                         .where(AgentMessage.agent_id == agent_id)) or 0)
        seq += 1
        self._seq[agent_id] = seq
        return {"task_run_id": self._run_id, "agent_id": agent_id, "seq": seq, "direction": direction,
                "data": dict(data), "created_at": _now()}


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
