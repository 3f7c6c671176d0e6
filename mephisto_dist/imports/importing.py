"""Writing a Mephisto data directory (read by ``mephisto_data``) into our database and storage.

Everything is written in one transaction: a directory that cannot be imported leaves nothing behind,
and a dry run is the same import rolled back (no file is copied). A run is keyed by where it came from
(``task_run.imported_from``: its task name, Mephisto id and creation time), so importing a directory
again skips the runs already here; workers, qualifications, grants, requesters, projects and tasks are
matched by their names, as both systems name them, and only what is missing is added.

Imported runs are closed: completed, never launched. Their rows are written in their final statuses as
Mephisto recorded them (this is creation, not a status change): a unit or agent Mephisto still had open
is expired. A unit Mephisto approved or soft-rejected gets a review and a done approval in the provider
ledger (Mephisto already paid it), a rejected one its review, so ``costs`` and ``export`` show what
happened; a completed unit is left to ``mephisto-dist review``. Requesters come without their secrets:
only the name and the provider (register them to use them again).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import (
    Agent,
    Assignment,
    GrantedQualification,
    OnboardingAgent,
    Project,
    ProviderCall,
    Qualification,
    Requester,
    Task,
    TaskRun,
    Unit,
    UnitReview,
    Worker,
)
from mephisto_dist.domain.status import AGENT_ACTIVE, UNIT_SUBMITTED, AgentStatus, UnitStatus
from mephisto_dist.errors import ConfigError
from mephisto_dist.imports.mephisto_data import AgentFolder, MephistoData, timestamp
from mephisto_dist.storage import Storage

DECIDED_BY = "mephisto"
# Copied files sit beside the workers' own uploads (``work.uploads``): uploads/<run>/<agent>/<name>.
UPLOADS_PREFIX = "uploads"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Mephisto's "no project" is no project here either.
_NO_PROJECT = "NO_PROJECT"
_KINDS = ("task", "run", "unit", "agent", "onboarding agent", "worker", "qualification", "grant", "requester",
          "project", "file")
_ALWAYS_SAID = ("task", "run", "unit", "agent", "worker", "qualification", "grant")
_OPEN_UNIT = frozenset({UnitStatus.CREATED, UnitStatus.LAUNCHED, UnitStatus.ASSIGNED})
_PAID = frozenset({UnitStatus.ACCEPTED, UnitStatus.SOFT_REJECTED})
_REVIEWED = frozenset({UnitStatus.ACCEPTED, UnitStatus.SOFT_REJECTED, UnitStatus.REJECTED})


@dataclass
class ImportSummary:
    """What an import added, what it found already here, and the runs it made."""

    source: Path
    schema: str
    dry_run: bool
    added: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    run_ids: list[int] = field(default_factory=list)

    def line(self) -> str:
        """``imported 1 task, 1 run, 6 units, ...; skipped 0 already imported`` (``would import`` for a dry run)."""
        said = [_count(self.added[kind], kind) for kind in _KINDS
                if kind in _ALWAYS_SAID or self.added[kind]]
        verb = "would import" if self.dry_run else "imported"
        skipped = sum(self.skipped.values())
        detail = ", ".join(_count(self.skipped[kind], kind) for kind in _KINDS if self.skipped[kind])
        return (f"{verb} {', '.join(said)}; skipped {skipped} already imported"
                + (f" ({detail})" if detail else ""))


def _count(n: int, kind: str) -> str:
    return f"{n} {kind}" if n == 1 else f"{n} {kind}s"


class _DryRun(Exception):
    """Leaves the transaction of a dry run, which rolls it back."""


def import_data(sessions: sessionmaker[Session], storage: Storage, data: MephistoData, *, dry_run: bool,
                now: datetime) -> ImportSummary:
    """Import ``data`` in one transaction (rolled back for a dry run) and say what it did."""
    summary = ImportSummary(data.path, data.schema, dry_run)
    try:
        with transaction(sessions) as session:
            _Import(session, data, summary, now, None if dry_run else storage).all()
            if dry_run:
                raise _DryRun
    except _DryRun:
        summary.run_ids.clear()
    return summary


class _Import:
    """One import: Mephisto's ids mapped to ours as rows are found or made."""

    def __init__(self, session: Session, data: MephistoData, summary: ImportSummary, now: datetime,
                 storage: Storage | None) -> None:
        self.session, self.data, self.summary, self.now, self.storage = session, data, summary, now, storage
        self.requesters: dict[str, Requester] = {}
        self.workers: dict[str, Worker] = {}
        self.qualifications: dict[str, Qualification] = {}
        self.tasks: dict[str, Task] = {}

    def all(self) -> None:
        rows = self.data.rows
        self._check_providers()
        for row in rows["requesters"]:
            self.requesters[str(row["requester_id"])] = self._requester(row)
        for row in rows["workers"]:
            self.workers[str(row["worker_id"])] = self._worker(row)
        for row in rows["qualifications"]:
            self.qualifications[str(row["qualification_id"])] = self._qualification(row)
        for row in rows["granted_qualifications"]:
            self._grant(row)
        projects = {str(row["project_id"]): str(row["project_name"]) for row in rows["projects"]}
        for row in rows["tasks"]:
            self.tasks[str(row["task_id"])] = self._task(row, projects.get(str(row["project_id"])))
        for row in rows["task_runs"]:
            self._run(row)

    def _check_providers(self) -> None:
        from mephisto_dist.providers import provider_types

        known = provider_types()
        for table, id_column in (("requesters", "requester_id"), ("workers", "worker_id"),
                                 ("task_runs", "task_run_id")):
            for row in self.data.rows[table]:
                if row["provider_type"] not in known:
                    raise ConfigError(f"{table} {row[id_column]} uses provider {row['provider_type']!r}, which "
                                      f"mephisto-dist does not have (it has {', '.join(known)})")

    def _found_or_added(self, kind: str, found: Any, make: Callable[[], Any]) -> Any:
        if found is not None:
            self.summary.skipped[kind] += 1
            return found
        made = make()
        self.session.add(made)
        self.session.flush()
        self.summary.added[kind] += 1
        return made

    def _requester(self, row: dict[str, Any]) -> Requester:
        provider, name = str(row["provider_type"]), str(row["requester_name"])
        found = self.session.scalar(select(Requester).where(Requester.provider_type == provider,
                                                            Requester.requester_name == name))
        return self._found_or_added("requester", found, lambda: Requester(  # type: ignore[no-any-return]
            provider_type=provider, requester_name=name, created_at=self.now))

    def _worker(self, row: dict[str, Any]) -> Worker:
        provider, name = str(row["provider_type"]), str(row["worker_name"])
        found = self.session.scalar(select(Worker).where(Worker.provider_type == provider,
                                                         Worker.worker_name == name))
        return self._found_or_added("worker", found, lambda: Worker(  # type: ignore[no-any-return]
            provider_type=provider, worker_name=name, created_at=self.now))

    def _qualification(self, row: dict[str, Any]) -> Qualification:
        name = str(row["qualification_name"])
        found = self.session.scalar(select(Qualification).where(Qualification.name == name))
        return self._found_or_added("qualification", found, lambda: Qualification(  # type: ignore[no-any-return]
            name=name, created_at=self.now))

    def _grant(self, row: dict[str, Any]) -> None:
        worker = self.workers.get(str(row["worker_id"]))
        qualification = self.qualifications.get(str(row["qualification_id"]))
        if worker is None or qualification is None:
            return  # a grant of a worker or qualification Mephisto no longer has
        found = self.session.scalar(select(GrantedQualification).where(
            GrantedQualification.worker_id == worker.id, GrantedQualification.qualification_id == qualification.id))
        granted_at = timestamp(row.get("update_date") or row["creation_date"]) or self.now
        self._found_or_added("grant", found, lambda: GrantedQualification(
            qualification_id=qualification.id, worker_id=worker.id, value=int(row["value"]), granted_at=granted_at))

    def _task(self, row: dict[str, Any], project_name: str | None) -> Task:
        project_id = None
        if project_name and project_name != _NO_PROJECT:
            found_project = self.session.scalar(select(Project).where(Project.name == project_name))
            project_id = self._found_or_added("project", found_project, lambda: Project(
                name=project_name, created_at=self.now)).id
        name = str(row["task_name"])
        found = self.session.scalar(select(Task).where(Task.task_name == name))
        return self._found_or_added("task", found, lambda: Task(  # type: ignore[no-any-return]
            task_name=name, task_type=str(row["task_type"]), project_id=project_id,
            created_at=timestamp(row["creation_date"]) or self.now))

    def _run(self, row: dict[str, Any]) -> None:
        mephisto_id = str(row["task_run_id"])
        task = self.tasks.get(str(row["task_id"]))
        requester = self.requesters.get(str(row["requester_id"]))
        if task is None or requester is None:
            raise ConfigError(f"{self.data.path}: task run {mephisto_id} names a task or requester the "
                              "database does not have")
        key = f"mephisto:{task.task_name}:{mephisto_id}:{row['creation_date']}"[:255]
        if self.session.scalar(select(TaskRun.id).where(TaskRun.imported_from == key)) is not None:
            self.summary.skipped["run"] += 1
            return
        config = _config(row["init_params"])
        created_at = timestamp(row["creation_date"]) or self.now
        run = TaskRun(
            task_id=task.id, requester_id=requester.id, blueprint_type=str(row["task_type"]),
            architect_type=str(_section(config, "architect").get("_architect_type") or "local"),
            provider_type=str(row["provider_type"]), sandbox=bool(row["sandbox"]), config=config,
            task_dir=str(self.data.path), build_dir="", max_concurrent_units=0, is_completed=True,
            created_at=created_at, completed_at=created_at, imported_from=key)
        self.session.add(run)
        self.session.flush()
        self.summary.added["run"] += 1
        self.summary.run_ids.append(run.id)
        _RunImport(self, run, mephisto_id).all()


class _RunImport:
    """One Mephisto task run's assignments, units, agents and onboarding agents."""

    def __init__(self, parent: _Import, run: TaskRun, mephisto_id: str) -> None:
        self.parent, self.run, self.mephisto_id = parent, run, mephisto_id
        self.session = parent.session
        self.assignments: dict[str, Assignment] = {}
        self.units: dict[str, Unit] = {}
        self.last_at = run.created_at

    def all(self) -> None:
        rows = self.parent.data.rows
        units = [u for u in rows["units"] if str(u["task_run_id"]) == self.mephisto_id]
        agents = [a for a in rows["agents"] if str(a["task_run_id"]) == self.mephisto_id]
        folders = {str(a["agent_id"]): self.parent.data.agent_folder(
            self.mephisto_id, str(a["assignment_id"]), str(a["agent_id"])) for a in agents}
        for index, row in enumerate(a for a in rows["assignments"] if str(a["task_run_id"]) == self.mephisto_id):
            self._assignment(index, row, agents, folders)
        for row in units:
            self._unit(row)
        # A unit names the agent that holds it last; a worker who came back to one assignment keeps that one.
        assigned = {str(u["agent_id"]) for u in units if u["agent_id"] is not None}
        taken: set[tuple[int, int]] = set()
        for row in sorted(agents, key=lambda a: (str(a["agent_id"]) not in assigned, -int(a["agent_id"]))):
            self._agent(row, folders[str(row["agent_id"])], taken)
        for row in rows["onboarding_agents"]:
            if str(row["task_run_id"]) == self.mephisto_id:
                self._onboarding_agent(row)
        self.run.completed_at = self.last_at

    def _seen(self, when: datetime | None) -> datetime | None:
        if when is not None and (self.last_at is None or when > self.last_at):
            self.last_at = when
        return when

    def _assignment(self, index: int, row: dict[str, Any], agents: list[dict[str, Any]],
                    folders: dict[str, AgentFolder]) -> None:
        mephisto_id = str(row["assignment_id"])
        data = _inputs(self.parent.data.assignment_data(self.mephisto_id, mephisto_id))
        if data is None:  # no assign_data.json: the inputs an agent of it saw
            data = next((folders[str(a["agent_id"])].data.get("inputs")  # type: ignore[union-attr]
                         for a in agents if str(a["assignment_id"]) == mephisto_id
                         and folders[str(a["agent_id"])].data is not None), None)
        assignment = Assignment(task_run_id=self.run.id, data_index=index,
                                data=data if isinstance(data, dict) else {"data": data},
                                created_at=timestamp(row["creation_date"]) or self.run.created_at)
        self.session.add(assignment)
        self.assignments[mephisto_id] = assignment

    def _unit(self, row: dict[str, Any]) -> None:
        assignment = self.assignments.get(str(row["assignment_id"]))
        if assignment is None:
            raise ConfigError(f"unit {row['unit_id']} belongs to assignment {row['assignment_id']}, which the "
                              "database does not have")
        self.session.flush()
        status = _unit_status(row)
        worker = self.parent.workers.get(str(row["worker_id"])) if row["worker_id"] is not None else None
        created_at = self._seen(timestamp(row["creation_date"])) or self.run.created_at
        unit = Unit(assignment_id=assignment.id, task_run_id=self.run.id, unit_index=int(row["unit_index"]),
                    pay_amount=float(row["pay_amount"]), status=status.value,
                    worker_id=worker.id if worker is not None else None, created_at=created_at,
                    status_changed_at=created_at)
        self.session.add(unit)
        self.session.flush()
        self.units[str(row["unit_id"])] = unit
        self.parent.summary.added["unit"] += 1

    def _agent(self, row: dict[str, Any], folder: AgentFolder, taken: set[tuple[int, int]]) -> None:
        unit = self.units.get(str(row["unit_id"]))
        worker = self.parent.workers.get(str(row["worker_id"]))
        if unit is None or worker is None:
            raise ConfigError(f"agent {row['agent_id']} names a unit or worker the database does not have")
        if (unit.assignment_id, worker.id) in taken:
            # An earlier agent of a worker who came back to the assignment: one agent per worker and
            # assignment here, so only the one holding the unit is kept.
            self.parent.summary.skipped["agent"] += 1
            return
        taken.add((unit.assignment_id, worker.id))
        mephisto_id = str(row["agent_id"])
        status = _agent_status(row)
        meta = folder.meta or {}
        started = timestamp(meta.get("task_start"))
        ended = self._seen(timestamp(meta.get("task_end")))
        data = folder.data or {}
        agent = Agent(
            id=f"mephisto-{self.run.id}-{mephisto_id}", unit_id=unit.id, assignment_id=unit.assignment_id,
            task_run_id=self.run.id, worker_id=worker.id, registration_id=f"mephisto:{mephisto_id}",
            status=status.value, provider_data={"mephisto_agent_id": mephisto_id},
            init_data=data.get("inputs") if isinstance(data.get("inputs"), dict) else {},
            outputs=self._outputs(data.get("outputs"), folder, mephisto_id),
            task_metadata={k: meta[k] for k in ("tips", "feedback") if meta.get(k)} or None,
            created_at=self._seen(timestamp(row["creation_date"])) or self.run.created_at,
            submitted_at=ended if UnitStatus(unit.status) in UNIT_SUBMITTED else None)
        agent.status_changed_at = ended or agent.created_at
        self.session.add(agent)
        self.parent.summary.added["agent"] += 1
        if str(row["unit_id"]) in self.units and unit.worker_id == worker.id:
            unit.agent_id = agent.id
            unit.assigned_at = started or agent.created_at
            unit.completed_at = agent.submitted_at
            unit.status_changed_at = ended or unit.status_changed_at
        self.session.flush()
        self._review(unit, worker, str(row["unit_id"]))

    def _outputs(self, outputs: Any, folder: AgentFolder, mephisto_id: str) -> dict[str, Any] | None:
        """The agent's outputs, each file it uploaded copied to our storage and named there by its record
        (as our uploads are); Mephisto's ``files`` list of names becomes the list of those records."""
        if outputs is None:
            return None
        result = dict(outputs) if isinstance(outputs, dict) else {"outputs": outputs}
        if not folder.files:
            return result
        records = [self._copy(path, mephisto_id) for path in folder.files]
        named = result.get("files")
        if isinstance(named, list):
            by_name = {r["filename"]: r for r in records}
            result["files"] = [by_name.get(str(n), n) for n in named]
            listed = {str(n) for n in named}
            unlisted = [r for r in records if r["filename"] not in listed]
            if unlisted:
                result["files"] = [*result["files"], *unlisted]
        else:
            result["files"] = records
        return result

    def _copy(self, path: Path, mephisto_id: str) -> dict[str, Any]:
        key = f"{UPLOADS_PREFIX}/{self.run.id}/mephisto-{_safe(mephisto_id)}/{_safe(path.name)}"
        size = path.stat().st_size
        locator = key
        if self.parent.storage is not None:
            with path.open("rb") as stream:
                size = self.parent.storage.put(key, stream)
            locator = self.parent.storage.locator(key)
        self.parent.summary.added["file"] += 1
        return {"filename": path.name, "path": locator, "storage_key": key, "size": size, "content_type": None}

    def _review(self, unit: Unit, worker: Worker, mephisto_unit_id: str) -> None:
        status = UnitStatus(unit.status)
        if status not in _REVIEWED or unit.worker_id != worker.id or unit.agent_id is None:
            return
        reviews = self.parent.data.reviews.get(mephisto_unit_id, [])
        last = reviews[-1] if reviews else None
        decided_at = unit.status_changed_at
        review = UnitReview(unit_id=unit.id, worker_id=worker.id, task_run_id=self.run.id, status=status.value,
                            note=last.note if last else None, bonus=last.bonus if last else None,
                            decided_by=DECIDED_BY, created_at=decided_at)
        self.session.add(review)
        self.session.flush()
        if status in _PAID:
            # Mephisto approved it on the provider: the ledger says so, and nothing sends it again.
            self.session.add(ProviderCall(
                idempotency_key=f"{self.run.imported_from}:unit:{mephisto_unit_id}:approve"[-255:],
                action="approve", provider_type=self.run.provider_type, worker_id=worker.id,
                task_run_id=self.run.id, unit_id=unit.id, unit_review_id=review.id, amount=unit.pay_amount,
                reason="approved in Mephisto", payload={}, status="done", attempts=0,
                receipt="imported from Mephisto", created_at=decided_at, claimed_at=decided_at,
                done_at=decided_at))

    def _onboarding_agent(self, row: dict[str, Any]) -> None:
        worker = self.parent.workers.get(str(row["worker_id"]))
        if worker is None:
            raise ConfigError(f"onboarding agent {row['onboarding_agent_id']} names a worker the database "
                              "does not have")
        mephisto_id = str(row["onboarding_agent_id"])
        folder = self.parent.data.onboarding_folder(self.mephisto_id, mephisto_id)
        outputs = (folder.data or {}).get("outputs")
        created_at = self._seen(timestamp(row["creation_date"])) or self.run.created_at
        self.session.add(OnboardingAgent(
            id=f"mephisto-{self.run.id}-onboarding-{mephisto_id}", task_run_id=self.run.id, worker_id=worker.id,
            registration_id=f"mephisto:onboarding_{mephisto_id}", status=_agent_status(row).value,
            provider_data={"mephisto_onboarding_agent_id": mephisto_id},
            outputs=outputs if isinstance(outputs, dict) else None, created_at=created_at,
            status_changed_at=created_at))
        self.parent.summary.added["onboarding agent"] += 1


def _unit_status(row: dict[str, Any]) -> UnitStatus:
    try:
        status = UnitStatus(str(row["status"]))
    except ValueError:
        raise ConfigError(f"unit {row['unit_id']} has status {row['status']!r}, which Mephisto does not "
                          "define") from None
    if status == UnitStatus.MIXED:
        raise ConfigError(f"unit {row['unit_id']} has status 'mixed', which only an assignment has")
    # The run is closed: what Mephisto left open was never going to be done.
    return UnitStatus.EXPIRED if status in _OPEN_UNIT else status


def _agent_status(row: dict[str, Any]) -> AgentStatus:
    try:
        status = AgentStatus(str(row["status"]))
    except ValueError:
        raise ConfigError(f"agent {row.get('agent_id', row.get('onboarding_agent_id'))} has status "
                          f"{row['status']!r}, which Mephisto does not define") from None
    return AgentStatus.EXPIRED if status in AGENT_ACTIVE else status


def _config(init_params: Any) -> dict[str, Any]:
    """The run's ``mephisto`` config as Mephisto stored it: its YAML text, JSON-encoded (1.1), or YAML."""
    text = str(init_params or "")
    parsed: Any = text
    for _ in range(2):  # a JSON string holding YAML: the string, then the mapping
        if not isinstance(parsed, str):
            break
        try:
            parsed = yaml.safe_load(parsed)
        except yaml.YAMLError:
            parsed = None
    if not isinstance(parsed, dict):
        return {"init_params": text}
    return parsed.get("mephisto", parsed) if isinstance(parsed.get("mephisto"), dict) else parsed


def _safe(name: str) -> str:
    """A storage key part made of the characters every storage takes."""
    return _UNSAFE.sub("_", name).strip("._")[:120] or "file"


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def _inputs(assign_data: Any) -> Any:
    """An assignment's inputs from Mephisto's ``assign_data.json`` (``InitializationData``: ``shared``
    and ``unit_data``)."""
    if isinstance(assign_data, dict) and "shared" in assign_data:
        return assign_data["shared"]
    return assign_data
