"""The stand-in for Mephisto's ``remote_procedure`` blueprint modules a task script imports:
``SharedRemoteProcedureTaskState`` (with its ``function_registry``), ``RemoteProcedureAgentState`` (what a
function receives) and the blueprint's type name. The functions run on the Celery workers, which obtain
them by running the script in capture mode (:mod:`.runner`), closures included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mephisto_dist.blueprints.remote_procedure import NAME, RemoteProcedureAgentState, RemoteRequest
from mephisto_dist.compat.shared_state import SharedStaticTaskState

__all__ = ["BLUEPRINT_TYPE_REMOTE_PROCEDURE", "RemoteProcedureAgentState", "RemoteProcedureBlueprint",
           "RemoteRequest", "SharedRemoteProcedureTaskState"]

BLUEPRINT_TYPE_REMOTE_PROCEDURE: Final = NAME


@dataclass
class SharedRemoteProcedureTaskState(SharedStaticTaskState):
    function_registry: Mapping[str, Callable[[str, dict[str, Any], RemoteProcedureAgentState], Any]] | None = None


class RemoteProcedureBlueprint:
    """Mephisto's blueprint class, for a script to subclass and register with its own ``TaskRunnerClass``
    (``mephisto_dist.compat.registry``); its build and pages stay mephisto-dist's ``remote_procedure``."""

    BLUEPRINT_TYPE: Final = NAME
    SharedStateClass = SharedRemoteProcedureTaskState
    AgentStateClass = RemoteProcedureAgentState
    TaskRunnerClass: Any = None
