"""SQLAlchemy models. Plain data holders: no session, no I/O, no status logic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Project(Base):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Requester(Base):
    __tablename__ = "requester"
    __table_args__ = (UniqueConstraint("provider_type", "requester_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    provider_type: Mapped[str] = mapped_column(String(64))
    requester_name: Mapped[str] = mapped_column(String(255))
    # Where its credentials are (a profile of the AWS shared credentials file; none: the standard AWS
    # environment) and its API endpoint when not the provider's own. Never a key.
    aws_profile: Mapped[str | None] = mapped_column(String(255))
    endpoint_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # ``requesters remove`` of a requester its ended runs still name: hidden from listings, beat and new
    # runs, kept so those runs' rows stay whole (a requester no run names is deleted instead).
    removed_at: Mapped[datetime | None] = mapped_column(default=None)


class Task(Base):
    """All TaskRuns sharing one ``task_name``."""

    __tablename__ = "task"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_name: Mapped[str] = mapped_column(String(255), unique=True)
    task_type: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaskRun(Base):
    __tablename__ = "task_run"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("requester.id"))
    blueprint_type: Mapped[str] = mapped_column(String(64))
    architect_type: Mapped[str] = mapped_column(String(64))
    provider_type: Mapped[str] = mapped_column(String(64))
    sandbox: Mapped[bool] = mapped_column(Boolean, default=True)
    # The full resolved config (the ``mephisto`` node after defaults and overrides).
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    task_dir: Mapped[str] = mapped_column(Text)
    build_dir: Mapped[str] = mapped_column(Text)
    # ``bundles/<sha256>.tar`` in object storage: the built files and the task folder's Python.
    bundle_key: Mapped[str | None] = mapped_column(String(128))
    server_url: Mapped[str | None] = mapped_column(Text)
    max_concurrent_units: Mapped[int] = mapped_column(Integer, default=0)
    # Units made for one worker each, counted against max_screening_units / max_gold_units in the
    # transaction that makes them (``mephisto_dist.work.screening.take_made_unit``).
    screening_units_made: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    gold_units_made: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    is_completed: Mapped[bool] = mapped_column(Boolean, default=False)
    shutdown_requested_at: Mapped[datetime | None]
    shutdown_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    # A run read from a Mephisto data directory (``mephisto_dist.imports``): the key of the run it came
    # from, so importing the same directory again finds it and adds nothing.
    imported_from: Mapped[str | None] = mapped_column(String(255), unique=True)


class Assignment(Base):
    """One data item; its status is derived from its units (``domain.status.assignment_status``)."""

    __tablename__ = "assignment"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_run_id: Mapped[int] = mapped_column(ForeignKey("task_run.id"), index=True)
    data_index: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Unit(Base):
    __tablename__ = "unit"
    __table_args__ = (
        UniqueConstraint("assignment_id", "unit_index"),
        # request_agent's lookup: launched units of one run, lowest id first.
        Index("ix_unit_run_status_id", "task_run_id", "status", "id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id"))
    task_run_id: Mapped[int] = mapped_column(ForeignKey("task_run.id"))
    unit_index: Mapped[int] = mapped_column(Integer)
    pay_amount: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(32), default="created")
    # Set while a worker holds the unit and kept once it is submitted; cleared when it is handed back.
    agent_id: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("worker.id"), index=True)
    provider_unit_id: Mapped[str | None] = mapped_column(String(255))
    # The launch that owns the unit's concurrency tokens (``launches``): set when the intent to publish is
    # recorded, kept while the unit is launched or assigned, and the provider's idempotency token.
    launch_id: Mapped[str | None] = mapped_column(String(64), index=True)
    launch_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When beat may re-send a launch whose sender did not record an outcome (died, or failed).
    launch_retry_at: Mapped[datetime | None]
    launch_error: Mapped[str | None] = mapped_column(Text)
    # Set when the launch ran out of attempts: the unit waits for ``review resend``.
    launch_failed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    launched_at: Mapped[datetime | None]
    assigned_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # Set, by compare-and-set, in the transaction that adds this unit to its worker's counters (golds
    # right or wrong, units completed): a re-run of the unit's event never counts it twice.
    counted_at: Mapped[datetime | None]


class Worker(Base):
    __tablename__ = "worker"
    __table_args__ = (UniqueConstraint("provider_type", "worker_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    provider_type: Mapped[str] = mapped_column(String(64))
    worker_name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Blocked from every task (and on the provider); a block qualification blocks from one task only.
    is_blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    block_reason: Mapped[str | None] = mapped_column(Text)
    blocked_at: Mapped[datetime | None]


class Agent(Base):
    """A Worker bound to a Unit. Its id is an unguessable token: it authorises submissions."""

    __tablename__ = "agent"
    __table_args__ = (
        UniqueConstraint("task_run_id", "registration_id"),
        # A worker never gets two units of one assignment.
        UniqueConstraint("assignment_id", "worker_id"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), index=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id"))
    task_run_id: Mapped[int] = mapped_column(ForeignKey("task_run.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"), index=True)
    registration_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default="none")
    provider_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    init_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    task_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]


class AgentMessage(Base):
    """One message between a hosted TaskRunner and an agent's page (``mephisto_dist.runners.assignments``):
    ``in`` from the page (as the runner took it), ``out`` to it; ``seq`` orders an agent's messages."""

    __tablename__ = "agent_message"
    __table_args__ = (UniqueConstraint("agent_id", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_run_id: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(8))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OnboardingAgent(Base):
    __tablename__ = "onboarding_agent"
    __table_args__ = (UniqueConstraint("task_run_id", "registration_id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_run_id: Mapped[int] = mapped_column(ForeignKey("task_run.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"), index=True)
    registration_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default="none")
    provider_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Qualification(Base):
    __tablename__ = "qualification"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # What it certifies, as a reviewer wrote it (Mephisto's TaskReview app asks for it).
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GrantedQualification(Base):
    __tablename__ = "granted_qualification"
    __table_args__ = (UniqueConstraint("qualification_id", "worker_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    qualification_id: Mapped[int] = mapped_column(ForeignKey("qualification.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"), index=True)
    value: Mapped[int] = mapped_column(Integer)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)


class UnitReview(Base):
    """One review decision on a unit: status, note and bonus, with when it was made and by whom."""

    __tablename__ = "unit_review"
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), index=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"), index=True)
    task_run_id: Mapped[int] = mapped_column(ForeignKey("task_run.id"))
    status: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    bonus: Mapped[float | None] = mapped_column(Float)
    bonus_paid_at: Mapped[datetime | None]
    # Who decided: ``cli:<login>`` for a command, ``app:<reviewer>`` for the review app.
    decided_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewBatch(Base):
    """One bulk decision on many units (``review.batches``), worked by Celery in chunks after the commit.

    ``unit_ids`` are the units named when it was made, ``position`` how many of them were worked (moved
    with a compare-and-set in the transaction that decides that chunk, so a chunk is decided once however
    often it is re-run); ``decided`` and ``skipped`` (decided meanwhile by someone else) are its progress.
    """

    __tablename__ = "review_batch"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_run_id: Mapped[int | None] = mapped_column(Integer, index=True)
    decision: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    bonus: Mapped[float | None] = mapped_column(Float)
    decided_by: Mapped[str | None] = mapped_column(String(255))
    unit_ids: Mapped[list[int]] = mapped_column(JSON)
    total: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)
    decided: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    last_skip: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class ProviderCall(Base):
    """A side effect on the crowd provider (approve, reject, bonus, block, unblock).

    The row is written with the decision that causes it and claimed before the provider is called, so a
    re-delivered task or a re-run command never repeats it; ``idempotency_key`` is also handed to the
    provider (MTurk's ``UniqueRequestToken``) for the one window the claim cannot cover: a process dying
    between calling the provider and recording that it did.
    """

    __tablename__ = "provider_call"
    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    action: Mapped[str] = mapped_column(String(16))
    provider_type: Mapped[str] = mapped_column(String(64))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"), index=True)
    task_run_id: Mapped[int | None] = mapped_column(ForeignKey("task_run.id"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("unit.id"), index=True)
    unit_review_id: Mapped[int | None] = mapped_column(ForeignKey("unit_review.id"))
    amount: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    # What the provider needs to find the work (worker name, HIT and assignment ids), as of the decision.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    receipt: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]


class RemoteCall(Base):
    """One remote procedure call from a worker's page (Mephisto's ``RemoteRequest``) and its answer: the
    live state of a ``remote_procedure`` assignment, kept with the agent's data and exported with it.

    ``request_id`` is the page's own id for the call, so a packet the page sends twice is one call.
    ``status``: ``pending`` (queued), ``running`` (a Celery worker holds it under a Redis lease),
    ``answered`` or ``failed`` (the page got an error packet). ``attempts`` counts the Celery runs that
    claimed it, so a call whose worker died is re-run once and then answered with an error.
    """

    __tablename__ = "remote_call"
    __table_args__ = (UniqueConstraint("agent_id", "request_id"),
                      Index("ix_remote_call_status", "status"))
    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    task_run_id: Mapped[int] = mapped_column(ForeignKey("task_run.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    args_json: Mapped[str] = mapped_column(Text)
    response_json: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]


class Server(Base):
    """A worker-facing server an architect deployed, recorded before it is started (``domain.servers``)."""

    __tablename__ = "server"
    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign key: the reconciler must still see servers of runs deleted from the database.
    task_run_id: Mapped[int | None] = mapped_column(Integer, index=True)
    architect: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    instance_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="deploying", index=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime | None]


class ReconcileRecord(Base):
    """What a reconciler found and what it did about it, for ``status`` and ``mephisto-dist reconciled``."""

    __tablename__ = "reconcile_record"
    id: Mapped[int] = mapped_column(primary_key=True)
    reconciler: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    task_run_id: Mapped[int | None] = mapped_column(Integer, index=True)
    found: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    done_at: Mapped[datetime | None]


class ProviderSubmission(Base):
    """An assignment the provider holds as submitted that never reached us (the web tier was down, or the
    run is gone): kept with the provider's answer and flagged for review, never lost."""

    __tablename__ = "provider_submission"
    id: Mapped[int] = mapped_column(primary_key=True)
    provider_type: Mapped[str] = mapped_column(String(64))
    requester_name: Mapped[str] = mapped_column(String(255))
    hit_id: Mapped[str] = mapped_column(String(255))
    assignment_id: Mapped[str] = mapped_column(String(255), unique=True)
    worker_name: Mapped[str] = mapped_column(String(255))
    task_run_id: Mapped[int | None] = mapped_column(Integer, index=True)
    unit_id: Mapped[int | None] = mapped_column(Integer)
    answer: Mapped[str | None] = mapped_column(Text)
    provider_status: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default="needs review")
    submitted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """Work that must follow a committed state change (``db.outbox``): written in the transaction that
    changes the state, sent after the commit, re-sent by beat until its handler marks it done.

    ``key`` names the change (``unit_submitted:<unit id>``), so one change has one message.
    ``status``: ``pending`` -> ``claimed`` (a handler runs it; ``attempts`` counts the claims) -> ``done``;
    an attempt that raised goes back to ``pending`` (re-sent after a backoff) or, out of attempts,
    ``failed`` (``review resend`` makes it pending again).
    """

    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_message_status", "status"),
                      Index("ix_outbox_message_run_status", "task_run_id", "status"))
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(255), unique=True)
    task_run_id: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
