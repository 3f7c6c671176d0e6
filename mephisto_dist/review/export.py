"""Exporting results: one record per unit, streamed from the database in id order, then one per ended
attempt (:func:`ended_attempt_records`), then one per onboarding attempt (:func:`onboarding_records`).

Every record says whether its agent's work is partial (``partial``: the agent ended without a submission,
``agent_status`` saying why: Mephisto's ``disconnect``, ``timeout``, ``partner disconnect``, ``expired`` or
``returned``). A unit's record holds the agent the unit ended with; an agent that ended without
submitting and whose unit went back to the pool (a lost runner, a time-out, a return) is no longer its
unit's agent, so its attempt is a record of its own, with what it left (a hosted runner's messages, its
remote calls) and no review or payment: nothing is owed for it, and its unit is paid once, to whoever
submitted it."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import (
    Agent,
    AgentMessage,
    Assignment,
    OnboardingAgent,
    Task,
    TaskRun,
    Unit,
    Worker,
)
from mephisto_dist.domain.status import AGENT_DISCONNECTED, UNIT_SUBMITTED, AgentStatus, UnitStatus
from mephisto_dist.errors import NotFoundError
from mephisto_dist.review.accounts import unit_accounts
from mephisto_dist.runners.live.calls import calls_by_agent
from mephisto_dist.storage import MissingKey, Storage
from mephisto_dist.work.uploads import stored_keys

FORMATS = ("jsonl", "json", "csv")
PAGE = 500


def resolve_runs(session: Session, *, task_name: str | None, run_id: int | None) -> list[int]:
    if run_id is not None:
        if session.get(TaskRun, run_id) is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        return [run_id]
    task_id = session.scalar(select(Task.id).where(Task.task_name == task_name))
    if task_id is None:
        known = list(session.scalars(select(Task.task_name).order_by(Task.task_name).limit(20)))
        hint = f"; known task names: {', '.join(known)}" if known else "; there are no tasks yet"
        raise NotFoundError(f"no task named {task_name!r}{hint}")
    return list(session.scalars(select(TaskRun.id).where(TaskRun.task_id == task_id).order_by(TaskRun.id)))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def exported_statuses(*, include_unsubmitted: bool, include_expired: bool) -> list[str] | None:
    """Which unit statuses an export holds (``None``: every one). By default the units that ended,
    submitted or expired, so that what was lost shows next to what was collected."""
    if include_unsubmitted:
        return None if include_expired else [s.value for s in UnitStatus if s != UnitStatus.EXPIRED]
    ended = set(UNIT_SUBMITTED) | ({UnitStatus.EXPIRED} if include_expired else set())
    return sorted(s.value for s in ended)


def unit_records(session: Session, run_ids: list[int], *, include_unsubmitted: bool = False,
                 include_expired: bool = True) -> Iterator[dict[str, Any]]:
    """One record per unit in id order, with its status, the agent's answers and metadata (Mephisto's
    tips and feedback arrive through ``submit_metadata``)."""
    statuses = exported_statuses(include_unsubmitted=include_unsubmitted, include_expired=include_expired)
    last_id = 0
    while True:
        query = (
            select(Unit, Assignment.data, TaskRun.id, Task.task_name, Agent, Worker.worker_name, TaskRun.provider_type)
            .join(Assignment, Assignment.id == Unit.assignment_id)
            .join(TaskRun, TaskRun.id == Unit.task_run_id)
            .join(Task, Task.id == TaskRun.task_id)
            .outerjoin(Agent, Agent.id == Unit.agent_id)
            .outerjoin(Worker, Worker.id == Unit.worker_id)
            .where(Unit.task_run_id.in_(run_ids), Unit.id > last_id)
            .order_by(Unit.id)
            .limit(PAGE)
        )
        if statuses is not None:
            query = query.where(Unit.status.in_(statuses))
        rows = session.execute(query).all()
        if not rows:
            return
        # A live task's remote calls and answers (Mephisto's agent state ``requests``) go with its data.
        agent_ids = [agent.id for _, _, _, _, agent, _, _ in rows if agent is not None]
        requests = calls_by_agent(session, agent_ids)
        # A hosted TaskRunner's conversation with the agent's page, in order.
        messages = _messages_by_agent(session, agent_ids)
        accounts = unit_accounts(session, [(unit.id, unit.status, unit.pay_amount) for unit, *_ in rows])
        for unit, inputs, run_id, task_name, agent, worker_name, provider_type in rows:
            data: dict[str, Any] = {"inputs": inputs, "outputs": agent.outputs if agent is not None else None}
            if agent is not None and agent.id in requests:
                data["requests"] = [_decoded(call) for call in requests[agent.id]]
            if agent is not None and agent.id in messages:
                data["messages"] = messages[agent.id]
            provider_data = (agent.provider_data or {}) if agent is not None else {}
            yield {
                "unit_id": str(unit.id),
                "assignment_id": str(unit.assignment_id),
                "task_run_id": str(run_id),
                "task_name": task_name,
                "worker_id": None if unit.worker_id is None else str(unit.worker_id),
                "worker_name": worker_name,
                "agent_id": unit.agent_id,
                "status": unit.status,
                "agent_status": agent.status if agent is not None else None,
                "partial": agent is not None and is_partial(agent.status),
                "pay_amount": unit.pay_amount,
                "start_time": _iso(unit.assigned_at),
                "end_time": _iso(_end_time(agent) if agent is not None else None),
                "data": data,
                "metadata": (agent.task_metadata or {}) if agent is not None else {},
                # Where the provider knows the unit (MTurk: the HIT and the worker's assignment of it).
                "provider": {"type": provider_type, "unit_id": unit.provider_unit_id,
                             "assignment_id": provider_data.get("assignment_id")},
                **accounts[unit.id].record(unit.pay_amount, unit.status),
            }
        last_id = rows[-1][0].id


def is_partial(agent_status: str) -> bool:
    """Whether an agent in this status ended without submitting (its work, if any, is partial)."""
    return agent_status in AGENT_DISCONNECTED


def _end_time(agent: Agent) -> datetime | None:
    """When the agent submitted, or when it ended without submitting; None while it works."""
    if agent.submitted_at is not None:
        return agent.submitted_at
    return agent.status_changed_at if is_partial(agent.status) else None


def ended_attempt_records(session: Session, run_ids: list[int]) -> Iterator[dict[str, Any]]:
    """One record per agent that ended without submitting and no longer holds its unit (the unit went back
    to the pool: its runner was lost, it timed out or was returned), in unit then agent order, when it left
    something: a hosted runner's messages, remote calls or outputs. ``partial`` is true, ``agent_status``
    says why it ended, ``status`` is its unit's status now, and ``review`` and ``payment`` are null."""
    ended = [s.value for s in AGENT_DISCONNECTED]
    after: tuple[int, str] = (0, "")
    while True:
        rows = session.execute(
            select(Agent, Unit.status, Unit.pay_amount, Unit.provider_unit_id, Assignment.data, Task.task_name,
                   Worker.worker_name, TaskRun.provider_type)
            .join(Unit, Unit.id == Agent.unit_id)
            .join(Assignment, Assignment.id == Agent.assignment_id)
            .join(TaskRun, TaskRun.id == Agent.task_run_id)
            .join(Task, Task.id == TaskRun.task_id)
            .join(Worker, Worker.id == Agent.worker_id)
            .where(Agent.task_run_id.in_(run_ids), Agent.status.in_(ended),
                   or_(Unit.agent_id.is_(None), Unit.agent_id != Agent.id),
                   or_(Agent.unit_id > after[0], and_(Agent.unit_id == after[0], Agent.id > after[1])))
            .order_by(Agent.unit_id, Agent.id)
            .limit(PAGE)).all()
        if not rows:
            return
        agent_ids = [row[0].id for row in rows]
        requests = calls_by_agent(session, agent_ids)
        messages = _messages_by_agent(session, agent_ids)
        for agent, unit_status, pay_amount, provider_unit_id, inputs, task_name, worker_name, provider_type in rows:
            if agent.id not in messages and agent.id not in requests and agent.outputs is None:
                continue  # nothing of its work to keep (a static task returned unanswered)
            data: dict[str, Any] = {"inputs": inputs, "outputs": agent.outputs}
            if agent.id in requests:
                data["requests"] = [_decoded(call) for call in requests[agent.id]]
            if agent.id in messages:
                data["messages"] = messages[agent.id]
            yield {
                "unit_id": str(agent.unit_id),
                "assignment_id": str(agent.assignment_id),
                "task_run_id": str(agent.task_run_id),
                "task_name": task_name,
                "worker_id": str(agent.worker_id),
                "worker_name": worker_name,
                "agent_id": agent.id,
                "status": unit_status,
                "agent_status": agent.status,
                "partial": True,
                "pay_amount": pay_amount,
                "start_time": _iso(agent.created_at),
                "end_time": _iso(_end_time(agent)),
                "data": data,
                "metadata": agent.task_metadata or {},
                "provider": {"type": provider_type, "unit_id": provider_unit_id,
                             "assignment_id": (agent.provider_data or {}).get("assignment_id")},
                "review": None,
                "payment": None,
            }
        last = rows[-1][0]
        after = (last.unit_id, last.id)


PASSED = "passed"
FAILED = "failed"
_OUTCOMES = {AgentStatus.APPROVED.value: PASSED, AgentStatus.REJECTED.value: FAILED}


def onboarding_records(session: Session, run_ids: list[int]) -> Iterator[dict[str, Any]]:
    """One record per onboarding attempt that left something (a hosted onboarding world's messages, an
    onboarding page's answers), in the order they began. ``onboarding`` is its outcome: ``passed``,
    ``failed``, or null when it ended unjudged (the page left, timed out; ``partial`` is then true, and
    ``agent_status`` says why). It has no unit, assignment, review or payment (onboarding is not paid)."""
    after: tuple[datetime | None, str] = (None, "")
    while True:
        query = (select(OnboardingAgent, Task.task_name, Worker.worker_name, TaskRun.provider_type)
                 .join(TaskRun, TaskRun.id == OnboardingAgent.task_run_id)
                 .join(Task, Task.id == TaskRun.task_id)
                 .join(Worker, Worker.id == OnboardingAgent.worker_id)
                 .where(OnboardingAgent.task_run_id.in_(run_ids))
                 .order_by(OnboardingAgent.created_at, OnboardingAgent.id).limit(PAGE))
        if after[0] is not None:
            query = query.where(or_(OnboardingAgent.created_at > after[0],
                                    and_(OnboardingAgent.created_at == after[0], OnboardingAgent.id > after[1])))
        rows = session.execute(query).all()
        if not rows:
            return
        messages = _messages_by_agent(session, [row[0].id for row in rows])
        for agent, task_name, worker_name, provider_type in rows:
            if agent.id not in messages and agent.outputs is None:
                continue  # nothing of it to keep (a page that never answered)
            data: dict[str, Any] = {"inputs": None, "outputs": agent.outputs}
            if agent.id in messages:
                data["messages"] = messages[agent.id]
            outcome = _OUTCOMES.get(agent.status)
            yield {
                "unit_id": None,
                "assignment_id": None,
                "task_run_id": str(agent.task_run_id),
                "task_name": task_name,
                "worker_id": str(agent.worker_id),
                "worker_name": worker_name,
                "agent_id": agent.id,
                "status": None,
                "agent_status": agent.status,
                "onboarding": outcome,
                "partial": outcome is None,
                "pay_amount": None,
                "start_time": _iso(agent.created_at),
                "end_time": _iso(agent.status_changed_at) if outcome is not None or is_partial(agent.status)
                else None,
                "data": data,
                "metadata": {},
                "provider": {"type": provider_type, "unit_id": None,
                             "assignment_id": (agent.provider_data or {}).get("assignment_id")},
                "review": None,
                "payment": None,
            }
        last = rows[-1][0]
        after = (last.created_at, last.id)


def _messages_by_agent(session: Session, agent_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    if not agent_ids:
        return found
    for agent_id, direction, data, created_at in session.execute(
            select(AgentMessage.agent_id, AgentMessage.direction, AgentMessage.data, AgentMessage.created_at)
            .where(AgentMessage.agent_id.in_(agent_ids)).order_by(AgentMessage.agent_id, AgentMessage.seq)):
        found.setdefault(agent_id, []).append({"direction": direction, "data": data, "time": _iso(created_at)})
    return found


def _decoded(call: dict[str, Any]) -> dict[str, Any]:
    """A remote call as Mephisto's agent state keeps it (``args_json``, ``response_json``: JSON text), plus
    the arguments and the answer decoded (``args``, ``response``), which is what a reader wants."""
    decoded = dict(call)
    for text_key, key in (("args_json", "args"), ("response_json", "response")):
        text = call.get(text_key)
        try:
            decoded[key] = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            decoded[key] = text
    return decoded


def _json(record: dict[str, Any]) -> str:
    """The record as JSON text, characters as they are; a worker's answer holding half a UTF-16
    character (a lone surrogate, stored as sent) has no UTF-8 form, so that record is written with
    ``\\u`` escapes, which read back to the same value."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record)
    return text


def _text(value: Any) -> Any:
    """A CSV cell or header: a lone surrogate, which UTF-8 cannot hold, written as its ``\\udXXX`` escape."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def write_records(records: Iterator[dict[str, Any]], out: IO[str], fmt: str) -> int:
    count = 0
    if fmt == "jsonl":
        for record in records:
            out.write(_json(record) + "\n")
            count += 1
    elif fmt == "json":
        out.write("[")
        for record in records:
            out.write(("," if count else "") + "\n  " + _json(record))
            count += 1
        out.write("\n]\n")
    elif fmt == "csv":
        # Units may answer different fields: gather every column before writing the header.
        rows = [{_text(k): _text(v) for k, v in _flatten(record).items()} for record in records]
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        writer = csv.DictWriter(out, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
        count = len(rows)
    else:
        raise ValueError(fmt)
    return count


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: the record's fields, its sections as ``section.key`` columns. An uploaded file is
    spread into ``outputs.<field>.<name|storage_key|...>`` columns (``outputs.<field>.<i>.<...>`` for
    several), and a live task's calls into ``requests.<i>.<...>`` with their arguments and answers
    decoded; any other nested answer stays one JSON cell, as does a hosted runner's transcript (``messages``)."""
    flat = {k: json.dumps(v) if isinstance(v, bool) else v for k, v in record.items()
            if k not in ("data", "metadata", "provider", "review", "payment")}
    parts = {"inputs": record["data"]["inputs"], "outputs": record["data"]["outputs"],
             "metadata": record.get("metadata")}
    for part, values in parts.items():
        for key, value in (values or {}).items():
            if part == "outputs" and stored_keys({key: value}):
                _spread(f"{part}.{key}", value, flat)
            else:
                flat[f"{part}.{key}"] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    for section in ("provider", "review", "payment"):
        _spread(section, record.get(section) or {}, flat)
    if "requests" in record["data"]:
        calls = [{k: v for k, v in call.items() if k not in ("args_json", "response_json")}
                 for call in record["data"]["requests"]]
        _spread("requests", calls, flat)
    if "messages" in record["data"]:
        flat["messages"] = json.dumps(record["data"]["messages"], ensure_ascii=False)  # the transcript, one cell
    return flat


def _spread(prefix: str, value: Any, flat: dict[str, Any]) -> None:
    """Nested dicts and lists as dotted columns; a leaf as itself (text) or its JSON (numbers, true, null
    as an empty cell)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _spread(f"{prefix}.{key}", item, flat)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _spread(f"{prefix}.{index}", item, flat)
    else:
        flat[prefix] = value if isinstance(value, str) or value is None else json.dumps(value)


def collect_files(records: Iterable[dict[str, Any]], keys: list[str]) -> Iterator[dict[str, Any]]:
    """Pass the records through, noting the storage key of every uploaded file they reference."""
    for record in records:
        keys.extend(stored_keys(record["data"]["outputs"]))
        yield record


@dataclass
class Downloaded:
    """What :func:`download_files` did: files written, and keys nothing is stored under (skipped)."""

    written: int = 0
    missing: list[str] = field(default_factory=list)


def download_files(storage: Storage, keys: Iterable[str], dest: Path,
                   progress: Callable[[int], None] | None = None) -> Downloaded:
    """Fetch each key to ``dest/<key>`` (the key's folders kept), through a ``.partial`` file renamed once
    whole, so a file under its own name is always complete. A key with nothing stored under it is
    skipped and noted; a store that fails (unreachable, access denied) stops the download, with no
    partial file left. ``progress`` hears the number of keys done after each one."""
    done = Downloaded()
    for index, key in enumerate(keys, 1):
        target = dest.joinpath(*key.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            with partial.open("wb") as out:
                for chunk in storage.stream(key):
                    out.write(chunk)
        except MissingKey:
            partial.unlink(missing_ok=True)
            done.missing.append(key)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        else:
            partial.replace(target)
            done.written += 1
        if progress is not None:
            progress(index)
    return done


@dataclass(frozen=True)
class Exported:
    """What an export wrote: how many unit records, ended attempts (``ended_count``) and onboarding
    attempts (``onboarding_count``) of how many runs, and the storage keys of their uploads."""

    count: int
    run_count: int
    file_keys: tuple[str, ...]
    ended_count: int = 0
    onboarding_count: int = 0


def export_results(factory: sessionmaker[Session], write: Callable[[Iterator[dict[str, Any]]], int], *,
                   task_name: str | None, run_id: int | None, include_unsubmitted: bool = False,
                   include_expired: bool = True) -> Exported:
    """Stream the unit records of a run (or of every run of ``task_name``), then its ended attempts' unless
    expired work is left out, then its onboarding attempts', to ``write`` (which returns how many it
    wrote), in one read transaction; :class:`NotFoundError` for an unknown run or task, before ``write`` is
    called."""
    with read_transaction(factory) as session:
        run_ids = resolve_runs(session, task_name=task_name, run_id=run_id)
        keys: list[str] = []
        ended = onboarding = 0

        def records() -> Iterator[dict[str, Any]]:
            nonlocal ended, onboarding
            yield from unit_records(session, run_ids, include_unsubmitted=include_unsubmitted,
                                    include_expired=include_expired)
            if include_expired:  # an ended attempt is expired work: left out with it
                for record in ended_attempt_records(session, run_ids):
                    ended += 1
                    yield record
            for record in onboarding_records(session, run_ids):
                onboarding += 1
                yield record

        count = write(collect_files(records(), keys))
    return Exported(count - ended - onboarding, len(run_ids), tuple(keys), ended, onboarding)
