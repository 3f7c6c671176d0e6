"""Mephisto's ``MephistoAgentWrapper``: a live agent as a ParlAI ``Agent``, so a ParlAI world acts and
observes on workers' pages. It subclasses ParlAI's own ``Agent`` (as Mephisto's does), so this module imports
ParlAI: the runner imports it when it plays a world, never a web process or a script that does not use
``parlai_chat``. Without ParlAI its import fails with the one line naming the extra to install."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from mephisto_dist.errors import ConfigError

try:
    from parlai.core.agents import Agent as ParlAIAgent
    from parlai.core.message import Message
except ImportError as missing:
    raise ConfigError("blueprint parlai_chat needs ParlAI: pip install 'mephisto-dist[parlai]' "
                      f"({missing})") from None

__all__ = ["MephistoAgentWrapper", "Message"]


class MephistoAgentWrapper(ParlAIAgent):  # type: ignore[misc]  # ParlAI has no type information
    """Mephisto's wrapper, with its semantics: setting ``agent_id`` shows the name on the page; ``act``
    takes a waiting message, else asks the page for one (``live_update_requested``, once) and, with a
    timeout, waits for it; ``observe`` gives the message an ``update_id``."""

    def __init__(self, agent: Any) -> None:
        self.mephisto_agent = agent
        self.__agent_id = "unnamed agent"
        self.__mephisto_agent_id = agent.get_agent_id()
        self.__act_requested = False

    @property
    def id(self) -> str:
        return self.__agent_id

    @property
    def agent_id(self) -> str:
        return self.__agent_id

    @agent_id.setter
    def agent_id(self, new_agent_id: str) -> None:
        self.mephisto_agent.observe({"task_data": {"agent_display_name": new_agent_id}})
        self.__agent_id = new_agent_id

    def act(self, timeout: float | None = None) -> Any:
        gotten_act = self.mephisto_agent.get_live_update()
        if gotten_act is None:
            if not self.__act_requested:
                self.mephisto_agent.observe({"task_data": {"live_update_requested": True}})
                self.__act_requested = True
            if timeout is not None:
                gotten_act = self.mephisto_agent.get_live_update(timeout=timeout)
        if gotten_act is None:
            return None
        self.__act_requested = False
        gotten_act["id"] = self.__agent_id
        return Message(gotten_act)

    def observe(self, act: Any) -> None:
        if act.get("update_id") is None:
            act["update_id"] = str(uuid4())
        self.mephisto_agent.observe(dict(act))
