"""The ``remote_procedure`` blueprint (Mephisto's RemoteProcedureBlueprint): a React page on
``mephisto-task``'s ``useMephistoRemoteProcedureTask`` that calls Python functions while the worker works.

The functions are the task's ``function_registry`` (a hooks file's, or a task script's
``SharedRemoteProcedureTaskState``): ``fn(request_id, args, agent_state) -> dict | None`` with Mephisto's
signature. Each call runs on a Celery worker (:mod:`mephisto_dist.blueprints.runner`), so a function must
not rely on state kept in one process between calls; what it may read is the agent's
:class:`RemoteProcedureAgentState`: the assignment's data (``init_data``) and the calls so far.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from mephisto_dist.blueprints import static_react_task, static_task
from mephisto_dist.blueprints.hooks import TaskHooks, hooks_for
from mephisto_dist.config import TaskConfig
from mephisto_dist.errors import ConfigError

NAME: Final = "remote_procedure"
# The page is a React bundle served as static_react_task serves one (index.html, wrap_crowd_source.js).
INDEX_PAGE: Final = static_react_task.INDEX_PAGE
requirements = static_task.requirements
build = static_react_task.build
onboarding_task_data = static_react_task.onboarding_task_data

RemoteFunction = Callable[[str, dict[str, Any], "RemoteProcedureAgentState"], Any]


@dataclass
class RemoteRequest:
    """One call as Mephisto records it (``uuid`` is the page's request id)."""

    uuid: str
    target: str
    args_json: str | None
    response_json: str | None
    timestamp: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RemoteProcedureAgentState:
    """What a remote function sees of the agent calling it, rebuilt from the database for each call."""

    init_data: dict[str, Any] | None
    requests: dict[str, RemoteRequest] = field(default_factory=dict)
    final_submission: dict[str, Any] | None = None
    agent_id: str | None = None

    def get_init_state(self) -> dict[str, Any] | None:
        if self.init_data is None:
            return None
        ordered = sorted(self.requests.values(), key=lambda r: r.timestamp)
        return {"task_data": self.init_data, "previous_requests": [r.to_dict() for r in ordered]}

    def get_data(self) -> dict[str, Any]:
        return {"final_submission": self.final_submission, "init_data": self.init_data,
                "requests": [r.to_dict() for r in self.requests.values()]}


def validate_and_load(blueprint_args: Mapping[str, Any],
                      rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Check the bundle and data as static_react_task does; a hooks file must define the functions (a
    task script's ``SharedRemoteProcedureTaskState`` is checked when the script launches)."""
    loaded = static_react_task.validate_and_load(blueprint_args, rows)
    if blueprint_args.get("hooks_module"):
        check_registry(hooks_for(blueprint_args))
    return loaded


def init_task_data(row: Mapping[str, Any], blueprint_args: Mapping[str, Any]) -> dict[str, Any]:
    """An assignment's data as the page's ``initialTaskData`` receives it (Mephisto's init state)."""
    return {"task_data": dict(row), "previous_requests": []}


def task_data(init_task_data: Mapping[str, Any]) -> dict[str, Any]:
    """The row inside an assignment's stored data (what ``agent_state.init_data`` is)."""
    inner = init_task_data.get("task_data")
    return dict(inner) if isinstance(inner, Mapping) else dict(init_task_data)


def with_previous_requests(init_task_data: Mapping[str, Any],
                           requests: Sequence[RemoteRequest]) -> dict[str, Any]:
    """A returning page's init data: the calls it already made, answers included."""
    return {"task_data": task_data(init_task_data), "previous_requests": [r.to_dict() for r in requests]}


def frontend_args(config: TaskConfig, hooks: TaskHooks) -> dict[str, Any]:
    """``/task_config.json``: as for a React task (Mephisto's RemoteProcedureBlueprint adds nothing)."""
    return static_react_task.frontend_args(config, hooks)


def function_registry(hooks: TaskHooks) -> Mapping[str, RemoteFunction]:
    return hooks.function_registry


def check_registry(hooks: TaskHooks) -> None:
    if not hooks.function_registry:
        raise ConfigError("remote_procedure needs a function_registry (name -> function) in its hooks "
                          "module or SharedRemoteProcedureTaskState")


def response_text(result: Any) -> str:
    """A function's return value as the page receives it (JSON text); TypeError if not JSON-able."""
    return json.dumps(result)
