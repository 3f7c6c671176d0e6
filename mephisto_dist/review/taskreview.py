"""What Mephisto's TaskReview client reads and writes, over our tables, in its JSON shapes: tasks and their
units waiting for review, a unit's inputs, outputs, metadata (tips, feedback, worker opinions) and
review history, qualifications and who holds them, and review statistics.

Its ids are strings, as Mephisto's database rows give them. Decisions are not here: the app makes them
through ``review.reviewing`` and ``review.batches``, as our own pages and the CLI do. Every write
commits the provider calls it causes (ledger rows) and returns their ids, to send after the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import (
    Agent,
    Assignment,
    GrantedQualification,
    Qualification,
    Task,
    TaskRun,
    Unit,
    UnitReview,
    Worker,
)
from mephisto_dist.domain.status import UNIT_SUBMITTED, UnitStatus
from mephisto_dist.errors import NotAllowed, NotFoundError
from mephisto_dist.review.qualifications import (
    check_name,
    grant,
    pending_worker_calls,
    record_notification,
    revoke,
)

Factory = sessionmaker[Session]
SUBMITTED = sorted(s.value for s in UNIT_SUBMITTED)
COMPLETED = UnitStatus.COMPLETED.value
MAX_DESCRIPTION_CHARS = 500
FEEDBACK_SUBJECT = "Feedback on your work"


def data_folder(unit_id: int) -> str:
    """What Mephisto's client shows (and slices from ``data/data``) as a unit's data folder: a label here,
    as the files are in storage and served by ``/api/units/<id>/static/...``."""
    return f"data/data/units/{unit_id}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _id(value: int | None) -> str | None:
    return None if value is None else str(value)


def _task(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFoundError(f"task {task_id} does not exist")
    return task


def _worker(session: Session, worker_id: int) -> Worker:
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFoundError(f"worker {worker_id} does not exist")
    return worker


def _qualification(session: Session, qualification_id: int) -> Qualification:
    qualification = session.get(Qualification, qualification_id)
    if qualification is None:
        raise NotFoundError(f"qualification {qualification_id} does not exist")
    return qualification


def check_units(session: Session, unit_ids: Sequence[int]) -> None:
    """A one-line error naming the first unit that does not exist."""
    found = set(session.scalars(select(Unit.id).where(Unit.id.in_(list(unit_ids)))))
    for unit_id in unit_ids:
        if unit_id not in found:
            raise NotFoundError(f"unit {unit_id} does not exist")


# -- tasks -------------------------------------------------------------------------------------------


def tasks(factory: Factory) -> list[dict[str, Any]]:
    """Every task, with how many of its units were submitted and whether all of those were reviewed."""
    with read_transaction(factory) as session:
        counts: dict[int, dict[str, int]] = {}
        for task_id, status, n in session.execute(
                select(TaskRun.task_id, Unit.status, func.count()).join(TaskRun, TaskRun.id == Unit.task_run_id)
                .where(Unit.status.in_(SUBMITTED)).group_by(TaskRun.task_id, Unit.status)):
            counts.setdefault(int(task_id), {})[str(status)] = int(n)
        found = []
        for task in session.scalars(select(Task).order_by(Task.id)):
            by_status = counts.get(task.id, {})
            total = sum(by_status.values())
            found.append({"id": str(task.id), "name": task.task_name, "is_reviewed": total > 0 and not by_status.get(
                COMPLETED), "unit_count": total, "created_at": _iso(task.created_at)})
        return found


def task(factory: Factory, task_id: int) -> dict[str, Any]:
    with read_transaction(factory) as session:
        found = _task(session, task_id)
        return {"created_at": _iso(found.created_at), "id": str(found.id), "name": found.task_name,
                "type": found.task_type}


def worker_unit_ids(factory: Factory, task_id: int) -> list[dict[str, Any]]:
    """The task's units waiting for review, with their workers, in id order."""
    return [{"worker_id": _id(worker_id), "unit_id": str(unit_id)} for worker_id, unit_id in _worker_units(factory, task_id)]


def worker_unit_ids_json(factory: Factory, task_id: int) -> str:
    """:func:`worker_unit_ids` as the JSON body Mephisto's client reads (``{"worker_units_ids": [...]}``),
    written from the integer ids directly: a task of 10,000 units waiting was 10,000 rows through the ORM's
    result processing and as many dicts through the JSON encoder, most of the route's time."""
    pairs = ",".join(_PAIR % (_quoted(worker_id), unit_id) for worker_id, unit_id in _worker_units(factory, task_id))
    return f'{{"worker_units_ids":[{pairs}]}}'


_PAIR = '{"worker_id":%s,"unit_id":"%d"}'


def _quoted(worker_id: int | None) -> str:
    return "null" if worker_id is None else f'"{int(worker_id)}"'


def _worker_units(factory: Factory, task_id: int) -> list[tuple[int | None, int]]:
    with read_transaction(factory) as session:
        _task(session, task_id)
        return [(worker_id, unit_id) for worker_id, unit_id in session.connection().execute(
            select(Unit.worker_id, Unit.id).join(TaskRun, TaskRun.id == Unit.task_run_id)
            .where(TaskRun.task_id == task_id, Unit.status == COMPLETED).order_by(Unit.id))]


def timeline(factory: Factory, task_id: int) -> dict[str, Any]:
    """Mephisto links a Grafana dashboard here; our metrics are Prometheus's (``mephisto-dist metrics``)."""
    with read_transaction(factory) as session:
        return {"dashboard_url": None, "server_is_available": False, "task_name": _task(session, task_id).task_name}


def worker_opinions(factory: Factory, task_id: int) -> dict[str, Any]:
    """The opinions workers left with their metadata (``worker_opinion``: questions and attachments)."""
    with read_transaction(factory) as session:
        name = _task(session, task_id).task_name
        rows = session.execute(
            select(Unit.id, Unit.worker_id, Agent.task_metadata).join(Agent, Agent.id == Unit.agent_id)
            .join(TaskRun, TaskRun.id == Unit.task_run_id).where(TaskRun.task_id == task_id).order_by(Unit.id))
        opinions = []
        for unit_id, worker_id, metadata in rows:
            opinion = (metadata or {}).get("worker_opinion")
            if isinstance(opinion, dict):
                opinions.append({"worker_id": _id(worker_id), "unit_data_folder": data_folder(unit_id),
                                 "unit_id": str(unit_id),
                                 "data": {"attachments": opinion.get("attachments") or [],
                                          "questions": opinion.get("questions") or []}})
        return {"task_name": name, "worker_opinions": opinions}


# -- units -------------------------------------------------------------------------------------------


def units(factory: Factory, *, task_id: int | None, unit_ids: Sequence[int] | None) -> list[dict[str, Any]]:
    """The named units (or every unit of the task) that wait for review, in Mephisto's short form."""
    with read_transaction(factory) as session:
        query = (select(Unit, TaskRun.task_id, Agent.submitted_at).join(TaskRun, TaskRun.id == Unit.task_run_id)
                 .outerjoin(Agent, Agent.id == Unit.agent_id).where(Unit.status == COMPLETED))
        if task_id is not None:
            _task(session, task_id)
            query = query.where(TaskRun.task_id == task_id)
        if unit_ids is not None:
            check_units(session, unit_ids)
            query = query.where(Unit.id.in_(list(unit_ids)))
        return [{
            "id": str(unit.id), "worker_id": _id(unit.worker_id), "task_id": str(owner), "pay_amount": unit.pay_amount,
            # Mephisto's server said ``creation_date``; its client's newer types read ``created_at``.
            "status": unit.status, "creation_date": _iso(unit.created_at), "created_at": _iso(unit.created_at),
            "is_reviewed": False,
            "results": {"start": _iso(unit.assigned_at), "end": _iso(submitted_at), "inputs_preview": None,
                        "outputs_preview": None},
            # Waiting for review, so never reviewed yet: Mephisto's client shows these empty.
            "review": {"bonus": None, "review_note": None},
        } for unit, owner, submitted_at in session.execute(query.order_by(Unit.id))]


def unit_details(factory: Factory, unit_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Each named unit's inputs, outputs and metadata (tips, feedback, opinions, and its review history
    as ``unit_reviews``), whatever its status."""
    with read_transaction(factory) as session:
        check_units(session, unit_ids)
        rows = session.execute(
            select(Unit.id, Assignment.data, Agent.outputs, Agent.task_metadata, Unit.task_run_id)
            .join(Assignment, Assignment.id == Unit.assignment_id).outerjoin(Agent, Agent.id == Unit.agent_id)
            .where(Unit.id.in_(list(unit_ids))).order_by(Unit.id)).all()
        # As Mephisto says it: whether the run's config names a review bundle (``/api/units/<id>/review.html``
        # renders the submission with it).
        with_review = {run_id for run_id, config in session.execute(
            select(TaskRun.id, TaskRun.config).where(TaskRun.id.in_({row[4] for row in rows})))
            if RunConfig.parse(config).blueprint.task_source_review}
        reviews: dict[int, list[dict[str, Any]]] = {}
        for review in session.scalars(select(UnitReview).where(UnitReview.unit_id.in_(list(unit_ids)))
                                      .order_by(UnitReview.created_at.desc(), UnitReview.id.desc())):
            reviews.setdefault(review.unit_id, []).append({
                "blocked_worker": None, "bonus": review.bonus, "creation_date": _iso(review.created_at),
                "qualification_id": None, "qualification_name": None, "review_note": review.note,
                "status": review.status, "value": None, "decided_by": review.decided_by})
        found = []
        for unit_id, inputs, outputs, metadata, run_id in rows:
            inputs, outputs = inputs or {}, outputs or {}
            # Outdated task code may put everything under ``final_submission``: show what is inside.
            if isinstance(outputs, dict) and "final_submission" in outputs:
                outputs = outputs["final_submission"]
            found.append({"has_task_source_review": run_id in with_review, "id": str(unit_id), "inputs": inputs,
                          "metadata": {**(metadata or {}), "unit_reviews": reviews.get(unit_id, [])},
                          "outputs": outputs, "prepared_inputs": inputs, "unit_data_folder": data_folder(unit_id)})
        return found


def unit_file_key(factory: Factory, unit_id: int, *, filename: str | None = None,
                  fieldname: str | None = None) -> str:
    """The storage key of a file the unit's worker uploaded, by its name or by the form field that sent it
    (only a file the unit's outputs name: a forged name is :class:`NotFoundError`)."""
    with read_transaction(factory) as session:
        check_units(session, [unit_id])
        outputs = session.scalar(select(Agent.outputs).join(Unit, Unit.agent_id == Agent.id)
                                 .where(Unit.id == unit_id)) or {}
    for field, value in (outputs.items() if isinstance(outputs, dict) else []):
        for item in value if isinstance(value, list) else [value]:
            if not (isinstance(item, dict) and isinstance(item.get("storage_key"), str)):
                continue
            if (fieldname is not None and field == fieldname) or (
                    filename is not None and filename in (item.get("filename"), item["storage_key"].rsplit("/", 1)[-1])):
                return str(item["storage_key"])
    wanted = f"field {fieldname!r}" if fieldname is not None else repr(filename)
    raise NotFoundError(f"unit {unit_id} has no uploaded file {wanted}")


# -- workers -----------------------------------------------------------------------------------------


def worker_name(factory: Factory, worker_id: int) -> tuple[str, str]:
    """The worker's name and provider (:class:`NotFoundError` for an unknown id)."""
    with read_transaction(factory) as session:
        worker = _worker(session, worker_id)
        return worker.worker_name, worker.provider_type


def check_unit_ids(factory: Factory, unit_ids: Sequence[int]) -> None:
    with read_transaction(factory) as session:
        check_units(session, unit_ids)


def send_feedback(factory: Factory, unit_ids: Sequence[int], message: str, *, now: datetime) -> tuple[int, ...]:
    """The review note, as a message to the worker of each unit (once per worker): ledger rows."""
    with transaction(factory) as session:
        check_units(session, unit_ids)
        worker_ids = sorted({w for w in session.scalars(select(Unit.worker_id).where(Unit.id.in_(list(unit_ids))))
                             if w is not None})
        return tuple(record_notification(session, worker_id, FEEDBACK_SUBJECT, message, now=now)
                     for worker_id in worker_ids)


# -- qualifications ----------------------------------------------------------------------------------


def _qualification_json(qualification: Qualification) -> dict[str, Any]:
    return {"creation_date": _iso(qualification.created_at), "description": qualification.description,
            "id": str(qualification.id), "name": qualification.name}


def qualifications(factory: Factory, *, worker_id: int | None) -> list[dict[str, Any]]:
    """Every qualification, or those the worker holds."""
    with read_transaction(factory) as session:
        query = select(Qualification).order_by(Qualification.name)
        if worker_id is not None:
            _worker(session, worker_id)
            query = query.join(GrantedQualification, GrantedQualification.qualification_id == Qualification.id) \
                .where(GrantedQualification.worker_id == worker_id)
        return [_qualification_json(q) for q in session.scalars(query)]


def qualification(factory: Factory, qualification_id: int) -> dict[str, Any]:
    with read_transaction(factory) as session:
        return _qualification_json(_qualification(session, qualification_id))


def create_qualification(factory: Factory, name: str, description: str | None, *, now: datetime) -> dict[str, Any]:
    """A new qualification (:class:`NotAllowed` when the name is taken)."""
    name = check_name(name)
    with transaction(factory) as session:
        if session.scalar(select(Qualification.id).where(Qualification.name == name)) is not None:
            raise NotAllowed(f"a qualification named {name!r} already exists")
        created = Qualification(name=name, description=(description or "").strip()[:MAX_DESCRIPTION_CHARS] or None,
                                created_at=now)
        session.add(created)
        session.flush()
        return _qualification_json(created)


def qualification_details(factory: Factory, qualification_id: int) -> dict[str, Any]:
    with read_transaction(factory) as session:
        _qualification(session, qualification_id)
        count = session.scalar(select(func.count()).select_from(GrantedQualification)
                               .where(GrantedQualification.qualification_id == qualification_id))
        return {"granted_qualifications_count": int(count or 0)}


def qualification_workers(factory: Factory, qualification_id: int, *, task_id: int | None) -> list[dict[str, Any]]:
    """Who holds it (with ``task_id``: those who submitted a unit of the task)."""
    with read_transaction(factory) as session:
        _qualification(session, qualification_id)
        query = select(GrantedQualification).where(GrantedQualification.qualification_id == qualification_id)
        if task_id is not None:
            _task(session, task_id)
            query = query.where(GrantedQualification.worker_id.in_(
                select(Unit.worker_id).join(TaskRun, TaskRun.id == Unit.task_run_id)
                .where(TaskRun.task_id == task_id, Unit.status.in_(SUBMITTED))))
        return [{"worker_id": str(g.worker_id), "value": g.value, "unit_review_id": None,
                 "granted_at": _iso(g.granted_at)} for g in session.scalars(query.order_by(GrantedQualification.id))]


def granted_qualifications(factory: Factory, *, qualification_id: int | None) -> list[dict[str, Any]]:
    """Every grant (of one qualification), blocked workers' left out as Mephisto does."""
    with read_transaction(factory) as session:
        query = (select(GrantedQualification, Qualification.name, Worker.worker_name)
                 .join(Qualification, Qualification.id == GrantedQualification.qualification_id)
                 .join(Worker, Worker.id == GrantedQualification.worker_id).where(Worker.is_blocked.is_(False)))
        if qualification_id is not None:
            _qualification(session, qualification_id)
            query = query.where(GrantedQualification.qualification_id == qualification_id)
        return [{"granted_at": _iso(g.granted_at), "qualification_id": str(g.qualification_id),
                 "qualification_name": name, "units": [], "value_current": g.value, "worker_id": str(g.worker_id),
                 "worker_name": worker} for g, name, worker in session.execute(query.order_by(GrantedQualification.id))]


def worker_qualifications(factory: Factory, worker_id: int) -> list[dict[str, Any]]:
    with read_transaction(factory) as session:
        _worker(session, worker_id)
        return [{"worker_id": str(g.worker_id), "qualification_id": str(g.qualification_id), "value": g.value,
                 "granted_at": _iso(g.granted_at)} for g in session.scalars(
                    select(GrantedQualification).where(GrantedQualification.worker_id == worker_id)
                    .order_by(GrantedQualification.id))]


def grant_to(factory: Factory, qualification_id: int, worker_id: int, value: int, *, unit_ids: Sequence[int],
             now: datetime) -> tuple[int, ...]:
    """Give the worker the qualification with ``value`` (or change the value held); the units it was given
    for must exist. The provider calls to send (MTurk keeps a copy)."""
    with transaction(factory) as session:
        _qualification(session, qualification_id)
        _worker(session, worker_id)
        check_units(session, unit_ids)
        grant(session, qualification_id, worker_id, value, now=now)
        return tuple(pending_worker_calls(session, worker_id))


def revoke_from(factory: Factory, qualification_id: int, worker_id: int, *, unit_ids: Sequence[int],
                ) -> tuple[int, ...]:
    """Take the qualification from the worker (:class:`NotAllowed` when not held)."""
    with transaction(factory) as session:
        name = _qualification(session, qualification_id).name
        worker = _worker(session, worker_id)
        check_units(session, unit_ids)
        if not revoke(session, qualification_id, worker_id):
            raise NotAllowed(f"worker {worker.worker_name} does not hold {name!r}")
        return tuple(pending_worker_calls(session, worker_id))


def rename_qualification(factory: Factory, qualification_id: int, name: str, description: str | None,
                         ) -> dict[str, Any]:
    """Rename it and change its description (:class:`NotAllowed` when the name is another's)."""
    name = check_name(name)
    with transaction(factory) as session:
        found = _qualification(session, qualification_id)
        taken = session.scalar(select(Qualification.id).where(Qualification.name == name,
                                                              Qualification.id != qualification_id))
        if taken is not None:
            raise NotAllowed(f"a qualification named {name!r} already exists")
        session.execute(update(Qualification).where(Qualification.id == qualification_id).values(
            name=name, description=(description or "").strip()[:MAX_DESCRIPTION_CHARS] or None))
        session.refresh(found)
        return _qualification_json(found)


# -- statistics --------------------------------------------------------------------------------------


def review_stats(factory: Factory, *, worker_id: int | None, task_id: int | None, since: datetime | None,
                 limit: int | None) -> dict[str, int]:
    """Decisions made (and units submitted) since a time, for a worker or a task or both; ``limit`` caps
    each count, as Mephisto's does."""
    with read_transaction(factory) as session:
        if worker_id is not None:
            _worker(session, worker_id)
        if task_id is not None:
            _task(session, task_id)
        reviews = select(UnitReview.status, func.count()).group_by(UnitReview.status)
        submitted = select(func.count()).select_from(Unit).where(Unit.status.in_(SUBMITTED))
        if worker_id is not None:
            reviews = reviews.where(UnitReview.worker_id == worker_id)
            submitted = submitted.where(Unit.worker_id == worker_id)
        if task_id is not None:
            runs = select(TaskRun.id).where(TaskRun.task_id == task_id)
            reviews = reviews.where(UnitReview.task_run_id.in_(runs))
            submitted = submitted.where(Unit.task_run_id.in_(runs))
        if since is not None:
            reviews = reviews.where(UnitReview.created_at >= since)
            submitted = submitted.where(Unit.created_at >= since)
        by_status = {str(status): int(n) for status, n in session.execute(reviews)}
        total = int(session.scalar(submitted) or 0)

    def capped(n: int) -> int:
        return n if limit is None else min(n, limit)

    approved = capped(by_status.get(UnitStatus.ACCEPTED.value, 0))
    rejected = capped(by_status.get(UnitStatus.REJECTED.value, 0))
    soft_rejected = capped(by_status.get(UnitStatus.SOFT_REJECTED.value, 0))
    return {"total_count": capped(total), "reviewed_count": approved + rejected + soft_rejected,
            "approved_count": approved, "rejected_count": rejected, "soft_rejected_count": soft_rejected}
