"""ParlAI's ``World`` base and ``validate``."""

from typing import Any


def validate(observation: Any) -> Any:
    """Make sure the observation table is valid, or raise an error."""
    if observation is not None and isinstance(observation, dict):
        return observation
    raise RuntimeError("Must return dictionary or Message object from act().")


class World:
    def __init__(self, opt: dict[str, Any], agents: Any = None, shared: Any = None) -> None:
        self.id = opt.get("task") if isinstance(opt, dict) else None
        self.opt = opt
        self.agents = agents or []
        self.max_exs = None
        self.total_exs = 0
        self.total_epochs = 0
        self.total_parleys = 0
        self.time = None

    def parley(self) -> None:
        raise NotImplementedError("Subclass should implement parley")

    def episode_done(self) -> bool:
        return False

    def epoch_done(self) -> bool:
        return False

    def get_agents(self) -> Any:
        return self.agents

    def shutdown(self) -> None:
        for agent in self.agents:
            agent.shutdown()
