"""ParlAI's ``Agent`` base: an id, the last observation, ``act`` answering nothing by default."""

from typing import Any


class Agent:
    def __init__(self, opt: dict[str, Any], shared: Any = None) -> None:
        self.id = "agent"
        self.opt = opt
        self.observation: Any = None

    def observe(self, observation: Any) -> Any:
        self.observation = observation
        return observation

    def act(self) -> Any:
        from parlai.core.message import Message

        return Message({"id": self.getID(), "text": "hello, teacher!", "episode_done": False})

    def getID(self) -> str:
        return self.id

    def reset(self) -> None:
        self.observation = None

    def shutdown(self) -> None:
        pass
