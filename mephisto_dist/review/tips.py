"""Workers' tips and feedback (``/submit_metadata``, kept in ``agent.task_metadata`` by
``domain.metadata``), reviewed as Mephisto's ``review_tips_for_task`` and ``review_feedback_for_task``
scripts do:

- an accepted tip is appended, as a ``header,text`` row, to the CSV at the run's
  ``mephisto.blueprint.tips_location`` (the file a later launch reads into the page's Tips widget,
  ``config.tips``), and marked ``accepted: true``; a rejected one is marked ``removed: true``;
- a feedback answer is marked ``reviewed: true``.

Each decision also records who made it and when (``decided_by``, ``decided_at``). A tip or feedback
answer already decided is left as it is: deciding twice (two reviewers, a repeated form) changes nothing
and writes no second row. The row is written before the mark is committed, and only when the CSV does not
hold it yet, so a decision that failed halfway and is made again writes the row once.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, Task, TaskRun, Unit, Worker
from mephisto_dist.errors import ConfigError, NotFoundError

TIP = "tip"
FEEDBACK = "feedback"


@dataclass(frozen=True)
class PendingNote:
    """A tip or a feedback answer not decided yet."""

    kind: str  # TIP or FEEDBACK
    note_id: str
    unit_id: int
    run_id: int
    task_name: str
    worker_name: str
    header: str  # a tip's header, a feedback answer's question
    text: str
    tips_location: str | None


def pending(factory: sessionmaker[Session], *, run_id: int | None = None, limit: int = 500) -> list[PendingNote]:
    """The tips and feedback answers no reviewer has decided yet, newest units first."""
    query = (select(Unit.id, Unit.task_run_id, Task.task_name, Worker.worker_name, Agent.task_metadata,
                    TaskRun.config)
             .join(Agent, Agent.id == Unit.agent_id).join(Worker, Worker.id == Agent.worker_id)
             .join(TaskRun, TaskRun.id == Unit.task_run_id).join(Task, Task.id == TaskRun.task_id)
             .where(Agent.task_metadata.is_not(None)).order_by(Unit.id.desc()))
    if run_id is not None:
        query = query.where(Unit.task_run_id == run_id)
    found: list[PendingNote] = []
    locations: dict[int, str | None] = {}
    with read_transaction(factory) as session:
        for unit_id, unit_run, task_name, worker_name, metadata, config in session.execute(query):
            if unit_run not in locations:
                locations[unit_run] = _tips_location(config)
            for tip in (metadata or {}).get("tips") or []:
                if isinstance(tip, Mapping) and not tip.get("accepted") and not tip.get("removed"):
                    found.append(PendingNote(TIP, str(tip.get("id")), unit_id, unit_run, task_name, worker_name,
                                             str(tip.get("header") or ""), str(tip.get("text") or ""),
                                             locations[unit_run]))
            for answer in (metadata or {}).get("feedback") or []:
                if isinstance(answer, Mapping) and not answer.get("reviewed"):
                    found.append(PendingNote(FEEDBACK, str(answer.get("id")), unit_id, unit_run, task_name,
                                             worker_name, str(answer.get("question") or ""),
                                             str(answer.get("text") or ""), None))
            if len(found) >= limit:
                break
    return found[:limit]


def _tips_location(config: Mapping[str, Any] | None) -> str | None:
    value = RunConfig.parse(config).blueprint.args.get("tips_location")
    return str(value) if value else None


def decide_tip(factory: sessionmaker[Session], unit_id: int, tip_id: str, *, accept: bool, reviewer: str,
               now: datetime) -> bool:
    """Accept (its row added to the run's tips CSV) or reject one tip of a unit's agent; False when it was
    already decided."""
    with transaction(factory) as session:
        agent, config = _agent_of(session, unit_id)
        tips = list((agent.task_metadata or {}).get("tips") or [])
        index = _index(tips, tip_id, "tip", unit_id)
        tip = dict(tips[index])
        if tip.get("accepted") or tip.get("removed"):
            return False
        if accept:
            location = _tips_location(config)
            if location is None:
                raise ConfigError(f"unit {unit_id}'s run sets no mephisto.blueprint.tips_location: there is no "
                                  "tips file to add the tip to")
            add_tip_row(Path(location).expanduser(), str(tip.get("header") or ""), str(tip.get("text") or ""))
        tip.update({"accepted": accept, "removed": not accept, "decided_by": reviewer,
                    "decided_at": now.isoformat()})
        tips[index] = tip
        agent.task_metadata = {**(agent.task_metadata or {}), "tips": tips}
    return True


def mark_feedback_reviewed(factory: sessionmaker[Session], unit_id: int, feedback_id: str, *, reviewer: str,
                           now: datetime) -> bool:
    """Mark one feedback answer of a unit's agent as reviewed; False when it already was."""
    with transaction(factory) as session:
        agent, _ = _agent_of(session, unit_id)
        answers = list((agent.task_metadata or {}).get("feedback") or [])
        index = _index(answers, feedback_id, "feedback answer", unit_id)
        answer = dict(answers[index])
        if answer.get("reviewed"):
            return False
        answer.update({"reviewed": True, "decided_by": reviewer, "decided_at": now.isoformat()})
        answers[index] = answer
        agent.task_metadata = {**(agent.task_metadata or {}), "feedback": answers}
    return True


def _agent_of(session: Session, unit_id: int) -> tuple[Agent, Mapping[str, Any] | None]:
    row = session.execute(select(Agent, TaskRun.config).join(Unit, Unit.agent_id == Agent.id)
                          .join(TaskRun, TaskRun.id == Unit.task_run_id).where(Unit.id == unit_id)).first()
    if row is None:
        raise NotFoundError(f"unit {unit_id} does not exist or has no agent")
    return row[0], row[1]


def _index(items: Sequence[Any], item_id: str, what: str, unit_id: int) -> int:
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and str(item.get("id")) == item_id:
            return index
    raise NotFoundError(f"unit {unit_id} has no {what} {item_id!r}")


def add_tip_row(path: Path, header: str, text: str) -> bool:
    """Append ``header,text`` to the tips CSV (made, with its header line, when missing), unless the same
    row is already there; True when it was added."""
    rows: list[dict[str, str]] = []
    if path.is_file():
        try:
            with path.open(encoding="utf-8-sig", newline="") as stream:
                rows = [dict(row) for row in csv.DictReader(stream)]
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise ConfigError(f"cannot read the tips file {path}: {error}") from None
    if any(row.get("header", "") == header and row.get("text", "") == text for row in rows):
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.is_file() or path.stat().st_size == 0
        unended = not new and not path.read_bytes().endswith(b"\n")  # a hand-edited file's last line
        with path.open("a", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream)
            if new:
                writer.writerow(["header", "text"])
            elif unended:
                stream.write("\r\n")
            writer.writerow([header, text])
    except OSError as error:
        raise ConfigError(f"cannot write the tips file {path}: {error.strerror or error}") from None
    return True
