"""Onboarding: the OnboardingAgent a worker gets before their first unit of a run whose blueprint sets
``onboarding_qualification``, and the recording of the verdict on their onboarding answers.

DESIGN.md's machine, written through ``db.transitions``: an onboarding agent is created in ``onboarding``
and moves to ``approved`` or ``rejected`` once. Passing grants ``<name>`` = 1; failing grants ``<name>`` = 0
and ``<name>-failed`` = 1, and from then on the worker is refused by every run with that qualification.
Whether an answer passes (the task's ``validate_onboarding`` hook) is decided by the caller.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mephisto_dist.db.models import OnboardingAgent, Worker
from mephisto_dist.db.transitions import move_onboarding_agent
from mephisto_dist.db.unique_rows import insert_ignoring_conflicts
from mephisto_dist.domain.qualifications import FAILED_SUFFIX
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.errors import RequestError
from mephisto_dist.review.qualifications import create_qualification, grant

ID_PREFIX: Final = "onboarding_"
"""DESIGN.md: an onboarding agent's id starts with ``onboarding_`` (Mephisto's front end tests for it)."""


def is_onboarding_id(agent_id: str) -> bool:
    return agent_id.startswith(ID_PREFIX)


_FIND = select(OnboardingAgent.id, OnboardingAgent.worker_id, OnboardingAgent.status).where(
    OnboardingAgent.task_run_id == bindparam("run_id"),
    OnboardingAgent.registration_id == bindparam("registration_id"))


def start(session: Session, run_id: int, worker_id: int, registration_id: str, provider_data: dict[str, Any],
          *, now: datetime) -> str:
    """The id of the worker's onboarding agent for this registration: the one in progress, else a new one."""
    connection = session.connection()
    existing = connection.execute(_FIND, {"run_id": run_id, "registration_id": registration_id}).first()
    stored_registration = registration_id
    if existing is not None:
        agent_id, owner_id, status = existing
        if owner_id != worker_id:
            raise RequestError("this registration id belongs to another worker", 403)
        if status == AgentStatus.ONBOARDING.value:
            return str(agent_id)
        # Decided already, yet the worker needs onboarding: their result was cleared to let them try
        # again. The registration keeps its decided row; this attempt gets a row of its own.
        stored_registration = f"{registration_id}#{secrets.token_hex(4)}"
    agent_id = ID_PREFIX + secrets.token_hex(12)
    inserted = insert_ignoring_conflicts(session, OnboardingAgent.__tablename__, {
        "id": agent_id, "task_run_id": run_id, "worker_id": worker_id, "registration_id": stored_registration,
        "status": AgentStatus.ONBOARDING.value,
        # Where the worker continues once they pass: the unit is claimed under this registration.
        "provider_data": {**provider_data, "agent_registration_id": registration_id},
        "created_at": now, "status_changed_at": now,
    })
    if not inserted:  # the same registration started onboarding on another process just now
        return start(session, run_id, worker_id, registration_id, provider_data, now=now)
    return agent_id


@dataclass(frozen=True)
class OnboardingAgentRow:
    id: str
    worker_id: int
    worker_name: str
    status: AgentStatus
    provider_data: dict[str, Any]

    @property
    def registration_id(self) -> str:
        return str(self.provider_data.get("agent_registration_id") or "")


_LOAD = (select(OnboardingAgent.id, OnboardingAgent.task_run_id, OnboardingAgent.worker_id, Worker.worker_name,
                OnboardingAgent.status, OnboardingAgent.provider_data)
         .join(Worker, Worker.id == OnboardingAgent.worker_id)
         .where(OnboardingAgent.id == bindparam("agent_id")))


def load(session: Session, run_id: int, agent_id: str) -> OnboardingAgentRow:
    """The onboarding agent, checked to belong to this run."""
    row = session.connection().execute(_LOAD, {"agent_id": agent_id}).first() if agent_id else None
    if row is None:
        raise RequestError(f"unknown onboarding agent id {agent_id!r}", 404)
    if row.task_run_id != run_id:
        raise RequestError(f"onboarding agent {agent_id!r} does not belong to this task run", 403)
    return OnboardingAgentRow(row.id, row.worker_id, row.worker_name, AgentStatus(row.status),
                              dict(row.provider_data or {}))


def record_result(session: Session, run_id: int, agent_id: str, qualification: str, *, passed: bool,
                  outputs: dict[str, Any], now: datetime) -> OnboardingAgentRow:
    """Move the onboarding agent to approved or rejected and grant the qualifications that say so.

    A repeated submission changes nothing: the first verdict stands and is returned (in ``status``).
    """
    agent = load(session, run_id, agent_id)
    if agent.status in (AgentStatus.APPROVED, AgentStatus.REJECTED):
        return agent
    verdict = AgentStatus.APPROVED if passed else AgentStatus.REJECTED
    # From ``waiting`` when its runner played an onboarding world and set it so (Mephisto's order).
    if not move_onboarding_agent(session, agent_id, (AgentStatus.ONBOARDING, AgentStatus.WAITING), verdict, now=now,
                                 outputs=outputs):
        again = load(session, run_id, agent_id)
        if again.status in (AgentStatus.APPROVED, AgentStatus.REJECTED):
            return again  # decided by another request meanwhile
        raise RequestError(f"this onboarding is no longer open (status: {again.status})", 409)
    _grant(session, qualification, agent.worker_id, 1 if passed else 0, now=now)
    if not passed:
        _grant(session, qualification + FAILED_SUFFIX, agent.worker_id, 1, now=now)
    return OnboardingAgentRow(agent.id, agent.worker_id, agent.worker_name, verdict, agent.provider_data)


def _grant(session: Session, name: str, worker_id: int, value: int, *, now: datetime) -> None:
    qualification_id, _ = create_qualification(session, name, now=now)
    grant(session, qualification_id, worker_id, value, now=now)
