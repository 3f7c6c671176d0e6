"""The stand-in for Mephisto's ``parlai_chat`` blueprint modules (``parlai_chat_blueprint``,
``parlai_chat_task_runner``, ``parlai_chat_agent_state``): ``BLUEPRINT_TYPE_PARLAI_CHAT``,
``SharedParlAITaskState``, ``ParlAIChatBlueprint`` and its ``ParlAIChatTaskRunner``.

The runner is Mephisto's, hosted by a runner worker (``mephisto_dist.runners.assignments``):
``run_assignment`` (``agent_count`` > 1) or ``run_unit`` (one worker, e.g. with a bot the world makes)
plays ``make_world(opt, agents)`` until ``episode_done()``, then tells each page ``task_done`` and keeps
the world's ``prep_save_data`` in each agent's messages (``SUBMIT_WORLD_DATA``); ``run_onboarding`` plays
``make_onboarding_world`` and leaves the onboarding agent ``waiting`` for its page's submit. The world
module is imported the first time the runner needs it, so a web process that builds the runner (for
``get_init_data_for_agent``) never imports ParlAI. This module does not import ParlAI either;
:mod:`.parlai_agent` does, when a world is played.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Final

from mephisto_dist.blueprints.parlai_chat import NAME, load_world_module
from mephisto_dist.compat.data_model import AgentState
from mephisto_dist.compat.live_agent import LiveAgentState
from mephisto_dist.compat.shared_state import SharedTaskState
from mephisto_dist.compat.task_runner import TaskRunner
from mephisto_dist.errors import ConfigError

__all__ = ["BLUEPRINT_TYPE_PARLAI_CHAT", "ParlAIChatAgentState", "ParlAIChatBlueprint", "ParlAIChatBlueprintArgs",
           "ParlAIChatTaskRunner", "SharedParlAITaskState"]

BLUEPRINT_TYPE_PARLAI_CHAT: Final = NAME
SUBMIT_WORLD_DATA: Final = "SUBMIT_WORLD_DATA"

ParlAIChatAgentState = LiveAgentState
"""Mephisto's ParlAIChatAgentState: every message in and out (``messages``), the conversation's data
(``init_data``) and the final submission; each message is also stored (``agent_message``)."""


@dataclass
class SharedParlAITaskState(SharedTaskState):
    frontend_task_opts: dict[str, Any] = field(default_factory=dict)
    world_opt: dict[str, Any] = field(default_factory=dict)
    onboarding_world_opt: dict[str, Any] = field(default_factory=dict)
    world_module: Any | None = None


@dataclass
class ParlAIChatBlueprintArgs:
    """Mephisto's argument dataclass, for scripts that name it; the arguments themselves are
    ``mephisto_dist.config.arguments.PARLAI_CHAT``."""

    _blueprint_type: str = NAME
    world_file: str | None = None
    preview_source: str | None = None
    task_description_file: str | None = None
    custom_source_bundle: str | None = None
    custom_source_dir: str | None = None
    extra_source_dir: str | None = None
    context_csv: str | None = None
    context_jsonl: str | None = None
    num_conversations: int | None = None
    onboarding_qualification: str | None = None


def _world_id(world_type: str, extra_id: str) -> str:
    return f"{world_type}-{extra_id}"


class ParlAIChatTaskRunner(TaskRunner):
    """Mephisto's ParlAIChatTaskRunner (its world loop and its ending, unchanged)."""

    def __init__(self, task_run: Any, args: Any, shared_state: Any) -> None:
        super().__init__(task_run, args, shared_state)
        if not isinstance(shared_state, SharedParlAITaskState):
            raise ConfigError("Must use SharedParlAITaskState for parlai blueprints")
        self._world_module: ModuleType | None = shared_state.world_module
        self.id_to_worlds: dict[str, Any] = {}

    @property
    def parlai_world_module(self) -> ModuleType:
        if self._world_module is None:
            self._world_module = load_world_module(Path(str(self.args.blueprint.world_file)).expanduser())
        return self._world_module

    # Mephisto sets it in __init__ from the world; here it is read when asked (the world imported then).
    @property
    def is_concurrent(self) -> bool:  # type: ignore[override]
        return bool(self.parlai_world_module.get_world_params()["agent_count"] > 1)

    def get_init_data_for_agent(self, agent: Any) -> Any:
        init_state = agent.state.get_init_state()
        if init_state is not None:
            return init_state
        agent.state.set_init_state(agent.get_unit().get_assignment_data().shared)
        return agent.state.get_init_state()

    def get_world_id(self, world_type: str, extra_id: str) -> str:
        return _world_id(world_type, extra_id)

    def run_onboarding(self, agent: Any) -> None:
        from mephisto_dist.compat.parlai_agent import MephistoAgentWrapper

        shared_state = self.shared_state
        opt: dict[str, Any] = shared_state.onboarding_world_opt
        parlai_agent = MephistoAgentWrapper(agent)
        try:
            world = self.parlai_world_module.make_onboarding_world(
                opt, parlai_agent, initialization_data=shared_state.onboarding_data)
        except TypeError:
            world = self.parlai_world_module.make_onboarding_world(opt, parlai_agent)
        world_id = self.get_world_id("onboard", agent.get_agent_id())
        self.id_to_worlds[world_id] = world
        while not world.episode_done() and agent.get_agent_id() in self.running_onboardings:
            world.parley()
        agent.update_status(AgentState.STATUS_WAITING)  # the page submits the onboarding on this
        world.shutdown()
        agent.state.update_data({"id": SUBMIT_WORLD_DATA, "WORLD_DATA": world.prep_save_data([parlai_agent]),
                                 "text": ""})
        while not agent.await_submit(timeout=None):
            time.sleep(0.3)

    def cleanup_onboarding(self, agent: Any) -> None:
        world_id = self.get_world_id("onboard", agent.get_agent_id())
        if world_id in self.id_to_worlds:
            self.id_to_worlds.pop(world_id).shutdown()

    def run_assignment(self, assignment: Any, agents: list[Any]) -> None:
        from mephisto_dist.compat.parlai_agent import MephistoAgentWrapper

        opt: dict[str, Any] = self.shared_state.world_opt
        parlai_agents = [MephistoAgentWrapper(a) for a in agents]
        try:
            world = self.parlai_world_module.make_world(
                opt, parlai_agents, initialization_data=assignment.get_assignment_data())
        except TypeError:
            world = self.parlai_world_module.make_world(opt, parlai_agents)
        world_id = self.get_world_id("assignment", assignment.db_id)
        self.id_to_worlds[world_id] = world
        while not world.episode_done() and assignment.db_id in self.running_assignments:
            world.parley()
        for agent in agents:
            agent.observe({"task_data": {"task_done": True}})
        world.shutdown()
        for agent, parlai_agent in zip(agents, parlai_agents, strict=True):
            agent.state.update_data({"id": SUBMIT_WORLD_DATA, "WORLD_DATA": world.prep_save_data([parlai_agent]),
                                     "text": ""})

    def cleanup_assignment(self, assignment: Any) -> None:
        world_id = self.get_world_id("assignment", assignment.db_id)
        if world_id in self.id_to_worlds:
            self.id_to_worlds.pop(world_id).shutdown()

    def run_unit(self, unit: Any, agent: Any) -> None:
        from mephisto_dist.compat.parlai_agent import MephistoAgentWrapper

        opt: dict[str, Any] = self.shared_state.world_opt
        parlai_agents = [MephistoAgentWrapper(agent)]
        try:
            world = self.parlai_world_module.make_world(
                opt, parlai_agents, initialization_data=unit.get_assignment_data())
        except TypeError:
            world = self.parlai_world_module.make_world(opt, parlai_agents)
        world_id = self.get_world_id("unit", unit.db_id)
        self.id_to_worlds[world_id] = world
        while not world.episode_done() and unit.db_id in self.running_units:
            world.parley()
        agent.observe({"task_data": {"task_done": True}})
        world.shutdown()
        if hasattr(world, "prep_save_data"):
            agent.observe({"id": SUBMIT_WORLD_DATA, "WORLD_DATA": world.prep_save_data(parlai_agents), "text": ""})

    def cleanup_unit(self, unit: Any) -> None:
        world_id = self.get_world_id("unit", unit.db_id)
        if world_id in self.id_to_worlds:
            self.id_to_worlds.pop(world_id).shutdown()

    def validate_onboarding(self, worker: Any, onboarding_agent: Any) -> bool:
        """Mephisto's ``ParlAIChatBlueprint.validate_onboarding``: the world module's, on the onboarding
        agent's data (its messages and ``SUBMIT_WORLD_DATA``), else everyone passes."""
        validate = getattr(self.parlai_world_module, "validate_onboarding", None)
        return True if validate is None else bool(validate(onboarding_agent.state.get_data()))


class ParlAIChatBlueprint:
    """Mephisto's blueprint class: its type and classes, for a script to name or subclass (a subclass
    registered with ``@register_mephisto_abstraction()`` may bring its own ``TaskRunnerClass``)."""

    BLUEPRINT_TYPE: Final = NAME
    AgentStateClass: ClassVar[type] = LiveAgentState
    OnboardingAgentStateClass: ClassVar[type] = LiveAgentState
    TaskRunnerClass: ClassVar[type] = ParlAIChatTaskRunner
    ArgsClass: ClassVar[type] = ParlAIChatBlueprintArgs
    SharedStateClass: ClassVar[type] = SharedParlAITaskState
