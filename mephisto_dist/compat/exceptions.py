"""The stand-in for ``mephisto.data_model.exceptions``: what a TaskRunner catches when an agent is gone,
with Mephisto's constructors (each names the agent, ``e.agent_id``)."""

from __future__ import annotations

__all__ = ["AbsentAgentError", "AgentDisconnectedError", "AgentReturnedError", "AgentShutdownError",
           "AgentTimeoutError"]


class AbsentAgentError(Exception):
    """An agent the runner waited on is no longer there."""

    def __init__(self, message: str, agent_id: str) -> None:
        super().__init__(message)
        self.message = message
        self.agent_id = agent_id


class AgentDisconnectedError(AbsentAgentError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"Agent {agent_id} disconnected", agent_id)


class AgentTimeoutError(AbsentAgentError):
    def __init__(self, timeout: float | None, agent_id: str) -> None:
        super().__init__(f"Agent {agent_id} did not act within {timeout} seconds", agent_id)


class AgentReturnedError(AbsentAgentError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"Agent {agent_id} returned the task", agent_id)


class AgentShutdownError(AbsentAgentError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"Agent {agent_id} was shut down", agent_id)
