"""ParlAI's crowdsourcing worlds: a world with data to save, an onboarding world, a task world."""

from typing import Any

from parlai.core.worlds import World


class CrowdDataWorld(World):
    def prep_save_data(self, workers: Any) -> dict[str, Any]:
        """This prepares data to be saved for later review, including chats from individual worker
        perspectives."""
        return {}


class CrowdOnboardWorld(CrowdDataWorld):
    """Generic world for onboarding a Turker and collecting information from them."""

    def __init__(self, opt: dict[str, Any], agent: Any) -> None:
        # As ParlAI's: ``opt`` is not kept (a world that needs it keeps it, as Mephisto's demo worlds do).
        self.agent = agent
        self.episodeDone = False

    def parley(self) -> None:
        self.episodeDone = True

    def episode_done(self) -> bool:
        return self.episodeDone

    def shutdown(self) -> None:
        pass


class CrowdTaskWorld(CrowdDataWorld):
    """Generic world for crowd tasks."""

    def __init__(self, opt: dict[str, Any], agent: Any) -> None:
        # As ParlAI's: ``opt`` is not kept (a world that needs it keeps it, as Mephisto's demo worlds do).
        self.agent = agent
        self.episodeDone = False

    def parley(self) -> None:
        self.episodeDone = True

    def episode_done(self) -> bool:
        return self.episodeDone

    def shutdown(self) -> None:
        self.agent.shutdown()

    def review_work(self) -> None:
        pass
