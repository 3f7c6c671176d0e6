"""Blueprints: what a task shows workers and what it needs from its files (Mephisto's task logic).

``static_task`` (:mod:`.static_task`): templated HTML pages filled from CSV/JSON data rows.
``static_react_task`` (:mod:`.static_react_task`): a prebuilt React bundle on ``mephisto-task``.
``remote_procedure`` (:mod:`.remote_procedure`): a React page calling the task's Python functions live.
``parlai_chat`` (:mod:`.parlai_chat`): a ParlAI world played with the workers on bootstrap-chat's page.
Each blueprint's TaskRunner is in :mod:`.runner`.

Each is a module; :func:`blueprint_module` picks any by name (its ``frontend_args``), and
:func:`blueprint_for` those a run can be launched from (the :class:`Blueprint` functions), so nothing
outside this package names a blueprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.config import TaskConfig
from mephisto_dist.domain.qualifications import Requirement
from mephisto_dist.errors import ConfigError


class Blueprint(Protocol):
    @property
    def NAME(self) -> str: ...

    @property
    def INDEX_PAGE(self) -> str | None: ...

    def validate_and_load(self, blueprint_args: Mapping[str, Any],
                          rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]: ...

    def build(self, blueprint_args: Mapping[str, Any], build_dir: Path, provider_type: str = "mock", *,
              cache_dir: Path | None = None) -> None:
        """Lay out the served files; ``cache_dir`` keeps what a blueprint builds once per machine."""
        ...

    def init_task_data(self, row: Mapping[str, Any], blueprint_args: Mapping[str, Any]) -> dict[str, Any]: ...

    def onboarding_task_data(self, hooks: TaskHooks) -> dict[str, Any]: ...

    def frontend_args(self, config: TaskConfig, hooks: TaskHooks) -> dict[str, Any]: ...

    def requirements(self, blueprint_args: Mapping[str, Any]) -> tuple[Requirement, ...]: ...


def blueprint_for(name: str) -> Blueprint:
    """The launchable blueprint called ``name``; a ConfigError naming the supported ones otherwise."""
    from mephisto_dist.blueprints import parlai_chat, remote_procedure, static_react_task, static_task

    known: dict[str, Blueprint] = {static_task.NAME: static_task, static_react_task.NAME: static_react_task,
                                   remote_procedure.NAME: remote_procedure, parlai_chat.NAME: parlai_chat}
    try:
        return known[name]
    except KeyError:
        raise ConfigError(f"blueprint {name!r} is not supported yet; supported: {', '.join(known)}") from None


def blueprint_module(name: str) -> ModuleType:
    """The module of any blueprint (one a run may have been created with outside the launcher too)."""
    from mephisto_dist.blueprints import parlai_chat, remote_procedure, static_react_task, static_task

    known = {static_task.NAME: static_task, static_react_task.NAME: static_react_task,
             remote_procedure.NAME: remote_procedure, parlai_chat.NAME: parlai_chat}
    try:
        return known[name]
    except KeyError:
        raise ConfigError(f"blueprint {name!r} is not supported yet; supported: {', '.join(known)}") from None


def units_per_assignment(blueprint_type: str, blueprint_args: Mapping[str, Any], configured: int) -> int:
    """Units per assignment of a new run: the blueprint's own count (parlai_chat: its world's agents), else
    the configured ``units_per_assignment``."""
    counted = getattr(blueprint_module(blueprint_type), "units_per_assignment", None)
    return int(counted(blueprint_args)) if callable(counted) else configured


def stored_frontend(blueprint_type: str, blueprint_args: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's page shows from the task folder's files, read at launch and stored with the run
    (``task_config.json`` keys); nothing for blueprints that serve those files from the bundle."""
    read = getattr(blueprint_module(blueprint_type), "stored_frontend", None)
    return dict(read(blueprint_args)) if callable(read) else {}


def run_requirements(blueprint_args: Mapping[str, Any]) -> tuple[Requirement, ...]:
    """A run's qualification requirements (``mephisto.blueprint.qualifications``), whatever its blueprint."""
    from mephisto_dist.blueprints import static_task

    return static_task.requirements(blueprint_args)


def onboarding_data(blueprint_type: str, hooks: TaskHooks) -> dict[str, Any]:
    """The onboarding page's data for a run of this blueprint (the static HTML page's, by default)."""
    from mephisto_dist.blueprints import static_task

    module = blueprint_module(blueprint_type)
    maker = getattr(module, "onboarding_task_data", static_task.onboarding_task_data)
    data: dict[str, Any] = maker(hooks)
    return data


def initial_task_data(blueprint_type: str, row: Mapping[str, Any], blueprint_args: Mapping[str, Any],
                      ) -> dict[str, Any]:
    """A data row as a run of this blueprint's pages receive it."""
    data: dict[str, Any] = blueprint_module(blueprint_type).init_task_data(row, blueprint_args)
    return data


_NEED_A_SCRIPT = {"use_screening_task": "a screening_data_factory and validator",
                  "use_golds": "a gold factory and validator"}


def check_python_features(blueprint_args: Mapping[str, Any], *, has_script: bool) -> None:
    """Screening and gold units need a task script's shared state."""
    for flag, what in _NEED_A_SCRIPT.items():
        if blueprint_args.get(flag) and not has_script:
            raise ConfigError(f"mephisto.blueprint.{flag}=true needs {what} written in Python: launch it from "
                              "a task script (run_task.py) whose SharedStaticTaskState has them")
