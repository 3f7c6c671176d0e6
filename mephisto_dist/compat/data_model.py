"""``Unit``, ``Agent`` and ``Worker`` as a task script's callbacks see them: views of one submitted unit
(or of a unit offered to a worker), with the methods Mephisto's validators call.

A worker's qualifications are read and written through the process's database where the callback
runs on a Celery worker (``on_unit_submitted``); ``worker_can_do_unit`` runs inside the web server's
transaction for the worker's request, where its Worker has a name and an id but no qualification calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from mephisto_dist.blueprints.hooks import WorkerQualifications
from mephisto_dist.errors import ConfigError

SCREENING_UNIT_INDEX: Final = -1
GOLD_UNIT_INDEX: Final = -2


@dataclass(frozen=True)
class GrantedQualification:
    qualification_name: str
    value: int


class Worker:
    def __init__(self, worker_name: str, db_id: int | None = None,
                 qualifications: WorkerQualifications | None = None) -> None:
        self.worker_name = worker_name
        self.db_id = None if db_id is None else str(db_id)
        self._id = db_id
        self._qualifications = qualifications

    def __repr__(self) -> str:
        return f"Worker({self.worker_name!r})"

    def _port(self, method: str) -> tuple[WorkerQualifications, int]:
        if self._qualifications is None or self._id is None:
            raise ConfigError(f"Worker.{method} is not available here under mephisto-dist "
                              "(only in on_unit_submitted)")
        return self._qualifications, self._id

    def get_granted_qualification(self, qualification_name: str) -> GrantedQualification | None:
        port, worker_id = self._port("get_granted_qualification")
        value = port.granted(worker_id).get(qualification_name)
        return None if value is None else GrantedQualification(qualification_name, value)

    def is_qualified(self, qualification_name: str) -> bool:
        found = self.get_granted_qualification(qualification_name)
        return found is not None and bool(found.value)

    def is_disqualified(self, qualification_name: str) -> bool:
        found = self.get_granted_qualification(qualification_name)
        return found is not None and not found.value

    def grant_qualification(self, qualification_name: str, value: int = 1, skip_crowd: bool = False) -> None:
        port, worker_id = self._port("grant_qualification")
        port.grant(worker_id, qualification_name, int(value))

    def revoke_qualification(self, qualification_name: str) -> None:
        port, worker_id = self._port("revoke_qualification")
        port.revoke(worker_id, qualification_name)

    def count_unit(self, qualification_name: str, unit: Unit) -> bool:
        """Not Mephisto's: add one to a counter qualification for ``unit``, once however often the
        unit's event runs (``UseGoldUnit``'s validator counts with it)."""
        port, worker_id = self._port("count_unit")
        if unit.db_id is None:
            raise ConfigError("Worker.count_unit needs a stored unit")
        return port.count_unit(worker_id, qualification_name, int(unit.db_id))

    grant_crowd_qualification = grant_qualification
    revoke_crowd_qualification = revoke_qualification


class AgentState:
    STATUS_NONE: Final = "none"
    STATUS_ACCEPTED: Final = "accepted"
    STATUS_ONBOARDING: Final = "onboarding"
    STATUS_WAITING: Final = "waiting"
    STATUS_IN_TASK: Final = "in task"
    STATUS_COMPLETED: Final = "completed"
    STATUS_DISCONNECT: Final = "disconnect"
    STATUS_TIMEOUT: Final = "timeout"
    STATUS_PARTNER_DISCONNECT: Final = "partner disconnect"
    STATUS_EXPIRED: Final = "expired"
    STATUS_RETURNED: Final = "returned"
    STATUS_APPROVED: Final = "approved"
    STATUS_SOFT_REJECTED: Final = "soft_rejected"
    STATUS_REJECTED: Final = "rejected"

    def __init__(self, inputs: dict[str, Any] | None, outputs: dict[str, Any] | None) -> None:
        self._data = {"inputs": inputs, "outputs": outputs}

    def get_data(self) -> dict[str, Any]:
        """``{"inputs": the unit's data, "outputs": what the worker submitted}``, as Mephisto's static
        agent state stores it."""
        return dict(self._data)

    get_parsed_data = get_data


class Agent:
    def __init__(self, db_id: str | None, worker: Worker, state: AgentState, status: str,
                 unit: Unit | None = None) -> None:
        self.db_id = db_id
        self.state = state
        self._worker = worker
        self._status = status
        self._unit = unit

    def get_agent_id(self) -> str | None:
        return self.db_id

    def get_worker(self) -> Worker:
        return self._worker

    def get_status(self) -> str:
        return self._status

    def get_unit(self) -> Unit | None:
        return self._unit


@dataclass(frozen=True)
class InitializationData:
    shared: dict[str, Any] = field(default_factory=dict)
    unit_data: list[dict[str, Any]] = field(default_factory=list)


class Unit:
    def __init__(self, db_id: int | None, unit_index: int, data: dict[str, Any], status: str,
                 agent: Agent | None = None) -> None:
        self.db_id = None if db_id is None else str(db_id)
        self.unit_index = unit_index
        self._data = data
        self._status = status
        self._agent = agent

    def __repr__(self) -> str:
        return f"Unit({self.db_id}, index={self.unit_index})"

    def get_assigned_agent(self) -> Agent | None:
        return self._agent

    def get_status(self) -> str:
        return self._status

    def get_assignment_data(self) -> InitializationData:
        return InitializationData(shared=dict(self._data), unit_data=[{}])
