"""The stand-in for ``mephisto.abstractions._subcomponents.task_runner``: Mephisto's ``TaskRunner`` base
class, which a task script subclasses (``TaskRunnerClass`` of the blueprint it registers).

mephisto-dist hosts the runner (``mephisto_dist.runners.assignments``): one instance per run and process,
``run_assignment(assignment, agents)`` called in a thread of a runner worker once every unit of the
assignment is claimed, then ``cleanup_assignment(assignment)``. The ``execute_*`` methods and the threads
of Mephisto's class are the host's, so they are not here; ``running_assignments``, ``running_units`` and
``running_onboardings`` hold what this instance runs now, as Mephisto's do (without the threads), and
``shutdown()`` (a forced stop of the run) shuts down their agents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["RunningAssignment", "RunningOnboarding", "RunningUnit", "TaskRunner"]


class _Stoppable(Protocol):
    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class RunningUnit:
    unit: Any
    agent: _Stoppable


@dataclass(frozen=True)
class RunningAssignment:
    assignment: Any
    agents: list[_Stoppable]


@dataclass(frozen=True)
class RunningOnboarding:
    onboarding_agent: _Stoppable


@dataclass(frozen=True)
class TaskRun:
    """What a hosted runner's ``task_run`` tells it: the run's id and blueprint type."""

    db_id: str
    task_type: str

    def get_task_config(self) -> Any:
        return None


class TaskRunner:
    is_concurrent = False
    """Whether an assignment's agents work together (``run_assignment``) rather than one by one
    (``run_unit``)."""

    @classmethod
    def hosts_units(cls) -> bool:
        """mephisto-dist's: whether runner workers host this runner (it runs assignments, or units);
        a subclass may set ``is_concurrent`` per instance (``ParlAIChatTaskRunner``: from its world)."""
        return cls.is_concurrent is True or cls.run_unit is not TaskRunner.run_unit

    @classmethod
    def plays_onboarding(cls) -> bool:
        """mephisto-dist's: whether the runner runs onboarding itself (``run_onboarding``)."""
        return cls.run_onboarding is not TaskRunner.run_onboarding

    def __init__(self, task_run: Any, args: Any, shared_state: Any) -> None:
        self.task_run = task_run
        self.args = args
        self.shared_state = shared_state
        self.running_assignments: dict[str, RunningAssignment] = {}
        self.running_units: dict[str, RunningUnit] = {}
        self.running_onboardings: dict[str, RunningOnboarding] = {}

    def get_init_data_for_agent(self, agent: Any) -> Any:
        """What the agent's page starts from (its ``init_task_data``)."""
        raise NotImplementedError()

    def filter_units_for_worker(self, units: list[Any], worker: Any) -> list[Any]:
        return units

    def get_data_for_assignment(self, assignment: Any) -> Any:
        return assignment.get_assignment_data()

    def shutdown(self) -> None:
        """Mephisto's, on a forced stop of the run: every agent this instance runs is shut down, so its
        next ``act`` raises ``AgentShutdownError`` and ``run_*`` ends through its ``cleanup_*``. The host
        calls it once per run and process; unlike Mephisto's it joins no thread (the caller is one of them).
        A subclass overriding it to free its own resources calls this one too."""
        for running_unit in list(self.running_units.values()):
            running_unit.agent.shutdown()
        for running_assignment in list(self.running_assignments.values()):
            for agent in running_assignment.agents:
                agent.shutdown()
        for running_onboarding in list(self.running_onboardings.values()):
            running_onboarding.onboarding_agent.shutdown()

    def run_onboarding(self, agent: Any) -> None:
        raise NotImplementedError()

    def cleanup_onboarding(self, agent: Any) -> None:
        raise NotImplementedError()

    def run_unit(self, unit: Any, agent: Any) -> None:
        raise NotImplementedError()

    def cleanup_unit(self, unit: Any) -> None:
        raise NotImplementedError()

    def run_assignment(self, assignment: Any, agents: list[Any]) -> None:
        raise NotImplementedError()

    def cleanup_assignment(self, assignment: Any) -> None:
        raise NotImplementedError()


def build_runner(runner_class: type[TaskRunner], run_id: int, blueprint_type: str, config: Mapping[str, Any],
                 shared_state: Any) -> TaskRunner:
    """A script's TaskRunner as Mephisto constructs it: the run, its config (``args.blueprint``,
    ``args.task``, ... as a DictConfig) and the script's shared state."""
    from omegaconf import OmegaConf  # the scripts' own dependency, imported where a runner is built

    args = OmegaConf.create({key: value for key, value in config.items()
                             if key in ("blueprint", "task", "architect", "provider")})
    return runner_class(TaskRun(str(run_id), blueprint_type), args, shared_state)
