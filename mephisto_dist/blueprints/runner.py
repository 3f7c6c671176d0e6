"""The TaskRunner contract: what a blueprint does on the Celery workers while its assignments run.

Mephisto ran one thread per assignment that waited on the worker. Here a TaskRunner is a set of event
hooks, each run by a short Celery task (``mephisto_dist.celery.runner_tasks``) that takes ids, reads the assignment's
state from the database and writes it back, so any worker continues any assignment and a task that is
re-delivered after its worker died (``acks_late``) does no harm run twice:

- ``on_unit_assigned``: an agent took a unit (sent by the web process after the commit, when
  ``wants_unit_assigned``);
- ``on_remote_call``: a live message from the page asked for work (a remote procedure call); its answer
  goes back to the page;
- ``on_unit_submitted``: the unit's submission is recorded;
- ``on_agent_disconnected``: the agent's page fell silent, or it timed out; its unit is back in the pool
  (an onboarding agent's too, which has no unit);
- ``on_assignment_finished``: every unit of the assignment is submitted.

:func:`runner_for` picks a run's runner by blueprint name; nothing outside ``blueprints/`` names one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# Celery's soft time limit, raised inside a task that ran too long (Celery re-exports billiard's class;
# billiard's module is the light import, and the web process imports this module too).
from billiard.exceptions import SoftTimeLimitExceeded

from mephisto_dist.blueprints import remote_procedure
from mephisto_dist.blueprints.hooks import SubmittedUnit, TaskHooks
from mephisto_dist.blueprints.remote_procedure import RemoteProcedureAgentState, RemoteRequest
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.errors import ConfigError, ServiceError
from mephisto_dist.errors.drivers import translate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunView:
    """The stored facts of a run a hook may need, and its hooks (from the run's bundle)."""

    run_id: int
    blueprint_type: str
    config: Mapping[str, Any]
    hooks: TaskHooks


@dataclass(frozen=True)
class CallView:
    """A remote call to run, with the calling agent's state as the database holds it."""

    agent_id: str
    request_id: str
    target: str
    args_json: str
    assignment_data: Mapping[str, Any]
    previous: tuple[RemoteRequest, ...]


class RemoteCallFailed(Exception):
    """A call that cannot be answered; ``str()`` is what the page is told (no traceback)."""


class TaskRunner(Protocol):
    @property
    def wants_unit_assigned(self) -> bool: ...

    @property
    def live(self) -> bool:
        """Whether the blueprint's pages talk on the live channel (their calls are kept per agent)."""
        ...

    def returning_agent_data(self, init_task_data: Mapping[str, Any],
                             requests: Sequence[RemoteRequest]) -> dict[str, Any]:
        """What a page that comes back to its agent starts from, given the calls it already made."""
        ...

    def wants_unit_submitted(self, hooks: TaskHooks) -> bool: ...

    def on_unit_assigned(self, run: RunView, agent_id: str, assignment_data: Mapping[str, Any]) -> dict[str, Any]:
        """The agent's initial state to store (``Agent.init_data``)."""
        ...

    def on_remote_call(self, run: RunView, call: CallView) -> str:
        """The answer's JSON text; raise :class:`RemoteCallFailed` to answer an error. The worker's time
        limit (``SoftTimeLimitExceeded``) is not the function's failure: it propagates to the caller."""
        ...

    def on_unit_submitted(self, run: RunView, unit: SubmittedUnit) -> None: ...

    def on_agent_disconnected(self, run: RunView, agent_id: str, status: str) -> None: ...

    def on_assignment_finished(self, run: RunView, assignment_id: int) -> None: ...


class StaticTaskRunner:
    """``static_task`` (and any page without a live exchange): the task's ``on_unit_submitted`` hook."""

    wants_unit_assigned = False
    live = False

    def returning_agent_data(self, init_task_data: Mapping[str, Any],
                             requests: Sequence[RemoteRequest]) -> dict[str, Any]:
        return dict(init_task_data)

    def wants_unit_submitted(self, hooks: TaskHooks) -> bool:
        return hooks.on_unit_submitted is not None

    def on_unit_assigned(self, run: RunView, agent_id: str, assignment_data: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def on_remote_call(self, run: RunView, call: CallView) -> str:
        raise RemoteCallFailed(f"the {run.blueprint_type} blueprint answers no remote calls")

    def on_unit_submitted(self, run: RunView, unit: SubmittedUnit) -> None:
        hook = run.hooks.on_unit_submitted
        if hook is None:
            return
        try:
            hook(unit)
        except Exception as error:
            if isinstance(error, ServiceError) or translate(error) is not None:
                raise  # the database or Redis failed under the hook: its outbox message is tried again
            # The task's own code: its failure is logged and does not hold the run back.
            log.exception("the task's on_unit_submitted hook failed for unit %s", unit.unit_id)

    def on_agent_disconnected(self, run: RunView, agent_id: str, status: str) -> None:
        return None

    def on_assignment_finished(self, run: RunView, assignment_id: int) -> None:
        return None


class RemoteProcedureRunner(StaticTaskRunner):
    """``remote_procedure``: the page's calls run the task's ``function_registry``."""

    wants_unit_assigned = True
    live = True

    def returning_agent_data(self, init_task_data: Mapping[str, Any],
                             requests: Sequence[RemoteRequest]) -> dict[str, Any]:
        # Mephisto's get_init_state: a returning page replays its past calls and their answers.
        return remote_procedure.with_previous_requests(init_task_data, requests)

    def on_unit_assigned(self, run: RunView, agent_id: str, assignment_data: Mapping[str, Any]) -> dict[str, Any]:
        # Mephisto's agent state keeps the assignment's data as ``init_data`` from the start.
        return {"init_data": remote_procedure.task_data(assignment_data)}

    def on_remote_call(self, run: RunView, call: CallView) -> str:
        function = remote_procedure.function_registry(run.hooks).get(call.target)
        if function is None:
            raise RemoteCallFailed(f"no remote function named {call.target!r}")
        try:
            args = json.loads(call.args_json) if call.args_json else {}
        except json.JSONDecodeError:
            raise RemoteCallFailed(f"the arguments of {call.target!r} are not JSON") from None
        state = RemoteProcedureAgentState(
            init_data=remote_procedure.task_data(call.assignment_data),
            requests={r.uuid: r for r in call.previous}, agent_id=call.agent_id)
        try:
            result = function(call.request_id, args, state)
        except SoftTimeLimitExceeded:
            raise
        except Exception as error:
            log.exception("remote function %r failed (agent %s, request %s)", call.target, call.agent_id,
                          call.request_id)
            raise RemoteCallFailed(f"{call.target} failed: {type(error).__name__}") from None
        try:
            return remote_procedure.response_text(result)
        except (TypeError, ValueError):
            log.exception("remote function %r returned a value that is not JSON", call.target)
            raise RemoteCallFailed(f"{call.target} returned a value that is not JSON") from None


_RUNNERS: dict[str, TaskRunner] = {
    "static_task": StaticTaskRunner(),
    "static_react_task": StaticTaskRunner(),
    remote_procedure.NAME: RemoteProcedureRunner(),
    # Its TaskRunner proper (Mephisto's ParlAIChatTaskRunner) is hosted on the runner workers; here only the
    # task's on_unit_submitted hook is left.
    "parlai_chat": StaticTaskRunner(),
}


def runner_for(blueprint_type: str) -> TaskRunner:
    try:
        return _RUNNERS[blueprint_type]
    except KeyError:
        raise ConfigError(f"blueprint {blueprint_type!r} has no TaskRunner; known: {', '.join(_RUNNERS)}") from None


def blueprint_type_of(config: Mapping[str, Any]) -> str:
    """The blueprint a run's stored config names."""
    return RunConfig.parse(config).blueprint.blueprint_type
