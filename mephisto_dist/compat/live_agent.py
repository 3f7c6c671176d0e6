"""Mephisto's live ``Agent`` as a hosted TaskRunner sees it (``run_assignment(assignment, agents)``):
``get_live_update``/``act`` wait for the page's next message, ``observe`` sends one to the page, and an
agent that is gone raises one of Mephisto's errors (:mod:`.exceptions`), with Mephisto's rules:

- no message within ``timeout`` -> the agent times out (status ``timeout``), ``AgentTimeoutError``;
- the page disconnected (or its agent was released) -> ``AgentDisconnectedError``;
- the worker returned the task -> ``AgentReturnedError``;
- the run was force-stopped (a shutdown entry in the agent's inbox, or the runner's ``shutdown()``), or
  the agent expired -> ``AgentShutdownError``;
- ``timeout`` None or 0 with nothing waiting -> ``None`` at once;
- ``await_submit()`` says whether the page submitted (an onboarding page does, once its runner set the
  agent ``waiting``); an agent gone meanwhile raises as ``act`` does, so a runner polling it ends.

The agent's ``state`` (:class:`LiveAgentState`) keeps every message in and out, as Mephisto's
ParlAIChatAgentState does, and the conversation's data it started from.

Every I/O goes through an :class:`AgentChannel`, which the runner host implements (Redis for the page's
messages, the database for statuses and the transcript), so this module holds Mephisto's semantics only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mephisto_dist.compat.data_model import AgentState, InitializationData, Unit, Worker
from mephisto_dist.compat.exceptions import (
    AgentDisconnectedError,
    AgentReturnedError,
    AgentShutdownError,
    AgentTimeoutError,
)

__all__ = ["Agent", "AgentChannel", "Assignment", "Inbound", "LiveAgentState"]

STATUS_CHECK_S = 5.0
"""A wait on the page re-reads the agent's status this often, so an ending nobody signalled is seen."""


@dataclass(frozen=True)
class Inbound:
    """What an agent's inbox holds: a message from its page, a status change, or a shutdown."""

    kind: Literal["act", "status", "shutdown", "submit"]
    data: Mapping[str, Any] | None = None
    status: str | None = None


class AgentChannel(Protocol):
    def receive(self, agent_id: str, timeout_s: float) -> Inbound | None:
        """The agent's next inbox entry, waiting up to ``timeout_s`` (0: do not wait); None if none."""
        ...

    def send(self, agent_id: str, data: dict[str, Any]) -> None:
        """Record ``data`` in the agent's transcript and send it to its page."""
        ...

    def received(self, agent_id: str, data: Mapping[str, Any]) -> None:
        """Record a message the runner took from the page in the agent's transcript."""
        ...

    def status(self, agent_id: str) -> str:
        ...

    def time_out(self, agent_id: str) -> None:
        """The agent did not act in time: ``in task`` -> ``timeout``, its page told."""
        ...

    def record(self, agent_id: str, data: Mapping[str, Any]) -> None:
        """Record what the runner put in the agent's state itself (not sent to the page)."""
        ...

    def update_status(self, agent_id: str, status: str) -> None:
        """Move the agent to ``status`` (from its current one) and tell its page."""
        ...


class NoChannel:
    """The channel of an agent outside its runner (``get_init_data_for_agent`` in the web process)."""

    def _refuse(self, *args: Any) -> Any:
        raise RuntimeError("this agent's page is reached only from run_assignment, on a runner worker")

    receive = send = received = status = time_out = record = update_status = _refuse


_DISCONNECTED = frozenset({"disconnect", "partner disconnect", "timeout"})
_GONE = _DISCONNECTED | {"returned", "expired"}


class LiveAgentState(AgentState):
    """Mephisto's ParlAIChatAgentState: ``messages`` (each with its ``timestamp``), ``init_data``,
    ``final_submission``; ``get_init_state`` is what the page starts from."""

    def __init__(self, init_data: Any, record: Callable[[Mapping[str, Any]], None]) -> None:
        super().__init__(init_data, None)
        self.init_data: Any = init_data
        self.messages: list[dict[str, Any]] = []
        self.final_submission: dict[str, Any] | None = None
        self.metadata: dict[str, Any] = {}
        self._record = record

    def set_init_state(self, data: Any) -> bool:
        self.init_data = data
        return True

    def get_init_state(self) -> dict[str, Any] | None:
        if self.init_data is None:
            return None
        return {"task_data": self.init_data, "past_live_updates": self.messages}

    def update_data(self, live_update: dict[str, Any]) -> None:
        """A message the runner keeps in the state without sending it (``SUBMIT_WORLD_DATA``)."""
        self.remember(live_update)
        self._record(live_update)

    def remember(self, message: dict[str, Any]) -> None:
        message["timestamp"] = time.time()
        self.messages.append(message)

    def update_submit(self, submitted_data: dict[str, Any]) -> None:
        self.final_submission = submitted_data

    def get_data(self) -> dict[str, Any]:
        return {"outputs": {"messages": self.messages, "final_submission": self.final_submission},
                "inputs": self.init_data, "metadata": self.metadata}

    get_parsed_data = get_data


class Agent:
    def __init__(self, db_id: str, worker: Worker, unit: Unit | None, channel: AgentChannel,
                 init_data: Any = None) -> None:
        self.db_id = db_id
        self.worker = worker
        self.unit = unit
        shared = unit.get_assignment_data().shared if unit is not None else init_data
        self.state = LiveAgentState(shared, lambda data: channel.record(db_id, data))
        self.is_shutdown = False
        self.did_submit = False
        self._channel = channel

    def __repr__(self) -> str:
        return f"Agent({self.db_id!r})"

    def get_agent_id(self) -> str:
        return self.db_id

    def get_worker(self) -> Worker:
        return self.worker

    def get_unit(self) -> Unit:
        if self.unit is None:
            raise RuntimeError(f"{self.db_id} is an onboarding agent: it has no unit")
        return self.unit

    def get_status(self) -> str:
        return self._channel.status(self.db_id)

    def observe(self, live_update: Mapping[str, Any]) -> None:
        data = dict(live_update)
        data.setdefault("update_id", str(uuid.uuid4()))
        self.state.remember(dict(data))
        self._channel.send(self.db_id, data)

    def update_status(self, new_status: str) -> None:
        self._channel.update_status(self.db_id, new_status)

    def await_submit(self, timeout: float | None = None) -> bool:
        """Whether the page submitted; with a timeout, waits for it (``AgentTimeoutError`` past it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.did_submit:
            left = 0.0 if deadline is None else deadline - time.monotonic()
            entry = self._channel.receive(self.db_id, max(0.0, min(left, STATUS_CHECK_S)))
            if entry is not None:
                if entry.kind == "submit":
                    self.did_submit = True
                    self.state.update_submit(dict(entry.data or {}))
                    break
                self._take(entry)
                continue
            self._raise_if_gone(self._channel.status(self.db_id))
            if deadline is None:
                break
            if time.monotonic() >= deadline:
                raise AgentTimeoutError(timeout, self.db_id)
        return self.did_submit

    def act(self, timeout: float | None = None) -> dict[str, Any] | None:
        return self.get_live_update(timeout)

    def get_live_update(self, timeout: float | None = None) -> dict[str, Any] | None:
        if self.is_shutdown:
            raise AgentShutdownError(self.db_id)
        if not timeout:
            return self._take(self._channel.receive(self.db_id, 0))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            found = self._take(self._channel.receive(self.db_id, min(left, STATUS_CHECK_S)))
            if found is not None:
                return found
            self._raise_if_gone(self._channel.status(self.db_id))
        self._raise_if_gone(self._channel.status(self.db_id))
        self._channel.time_out(self.db_id)
        raise AgentTimeoutError(timeout, self.db_id)

    def shutdown(self) -> None:
        self.is_shutdown = True

    def _take(self, entry: Inbound | None) -> dict[str, Any] | None:
        if entry is None:
            return None
        if entry.kind == "shutdown":
            self.is_shutdown = True
            raise AgentShutdownError(self.db_id)
        if entry.kind == "status":
            self._raise_if_gone(entry.status or "")
            return None
        if entry.kind == "submit":
            self.did_submit = True
            self.state.update_submit(dict(entry.data or {}))
            return None
        data = dict(entry.data or {})
        self._channel.received(self.db_id, data)
        self.state.remember(dict(data))
        return data

    def _raise_if_gone(self, status: str) -> None:
        if status in _GONE:
            self._raise_if_shut_down()
        if status in _DISCONNECTED:
            raise AgentDisconnectedError(self.db_id)
        if status == "returned":
            raise AgentReturnedError(self.db_id)
        if status == "expired":
            self.is_shutdown = True
            raise AgentShutdownError(self.db_id)

    def _raise_if_shut_down(self) -> None:
        """An agent found gone may have been shut down: a forced stop pushes the shutdown before it moves
        the agent's status, so a shutdown waiting in the inbox is why it is gone (``AgentShutdownError``,
        not the status's error). What else waits there is for no one now."""
        while (entry := self._channel.receive(self.db_id, 0)) is not None:
            if entry.kind == "shutdown":
                self.is_shutdown = True
                raise AgentShutdownError(self.db_id)


class Assignment:
    """Mephisto's ``Assignment`` as ``run_assignment`` receives it: its id, units and data."""

    def __init__(self, db_id: str, units: list[Unit], data: Mapping[str, Any], agents: list[Agent]) -> None:
        self.db_id = db_id
        self._units = units
        self._data = dict(data)
        self._agents = agents

    def __repr__(self) -> str:
        return f"Assignment({self.db_id!r})"

    def get_units(self) -> list[Unit]:
        return list(self._units)

    def get_agents(self) -> list[Agent]:
        return list(self._agents)

    def get_assignment_data(self) -> InitializationData:
        return InitializationData(dict(self._data), [{} for _ in self._units])
