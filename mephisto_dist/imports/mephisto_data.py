"""Reading a Mephisto data directory, and nothing else: its SQLite database (``database.db``, opened
read-only) and the run folders beside it, as Mephisto writes them:

    <data dir>/database.db
    <data dir>/data/runs/<project or NO_PROJECT>/<task_run_id>/<assignment_id>/assign_data.json
        .../<assignment_id>/<agent_id>/agent_data.json     the agent's inputs and outputs
        .../<assignment_id>/<agent_id>/agent_meta.json     task_start, task_end, tips, feedback
        .../<assignment_id>/<agent_id>/<any other file>    files the worker uploaded
    <data dir>/data/runs/.../<task_run_id>/onboarding/onboarding_<id>/agent_data.json

Two schemas are known: Mephisto 1.1's (its tables as created by 1.1.x) and the current one (the same
tables after Mephisto's own migrations, listed in its ``migrations`` table: random integer ids,
``granted_qualifications.update_date``, ``qualifications.description``, reviews in ``unit_review`` or
``worker_review``). Anything else is refused, naming what is missing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mephisto_dist.errors import ConfigError

DATABASE_FILE = "database.db"
AGENT_DATA_FILE = "agent_data.json"
AGENT_META_FILE = "agent_meta.json"
ASSIGNMENT_DATA_FILE = "assign_data.json"
ONBOARDING_PREFIX = "onboarding_"

# The columns read, per table: a database without one of them is not a schema we know.
_READ: dict[str, tuple[str, ...]] = {
    "projects": ("project_id", "project_name"),
    "tasks": ("task_id", "task_name", "task_type", "project_id", "creation_date"),
    "requesters": ("requester_id", "requester_name", "provider_type"),
    "task_runs": ("task_run_id", "task_id", "requester_id", "init_params", "is_completed", "provider_type",
                  "task_type", "sandbox", "creation_date"),
    "assignments": ("assignment_id", "task_run_id", "creation_date"),
    "units": ("unit_id", "assignment_id", "unit_index", "pay_amount", "status", "agent_id", "worker_id",
              "task_run_id", "creation_date"),
    "workers": ("worker_id", "worker_name", "provider_type"),
    "agents": ("agent_id", "worker_id", "unit_id", "task_run_id", "assignment_id", "status", "creation_date"),
    "onboarding_agents": ("onboarding_agent_id", "worker_id", "task_run_id", "status", "creation_date"),
    "qualifications": ("qualification_id", "qualification_name"),
    "granted_qualifications": ("worker_id", "qualification_id", "value", "creation_date"),
}
_REVIEW_TABLES = ("worker_review", "unit_review")
SCHEMA_1_1 = "Mephisto 1.1"
SCHEMA_CURRENT = "Mephisto's current schema"


@dataclass(frozen=True)
class AgentFolder:
    """What an agent's folder holds: its data (inputs, outputs), its metadata and the files uploaded."""

    data: dict[str, Any] | None
    meta: dict[str, Any] | None
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Review:
    """A review Mephisto recorded (current schema only): its status, note and bonus."""

    status: str | None
    note: str | None
    bonus: float | None


@dataclass
class MephistoData:
    """Everything read from one data directory: each table's rows (column name -> value), plus the folders."""

    path: Path
    schema: str
    rows: dict[str, list[dict[str, Any]]]
    reviews: dict[str, list[Review]] = field(default_factory=dict)  # unit id -> its reviews, oldest first
    run_dirs: dict[str, Path] = field(default_factory=dict)  # task run id -> its folder

    def assignment_data(self, run_id: str, assignment_id: str) -> Any:
        run_dir = self.run_dirs.get(run_id)
        return None if run_dir is None else _json(run_dir / assignment_id / ASSIGNMENT_DATA_FILE)

    def agent_folder(self, run_id: str, assignment_id: str, agent_id: str) -> AgentFolder:
        run_dir = self.run_dirs.get(run_id)
        return _folder(None if run_dir is None else run_dir / assignment_id / agent_id)

    def onboarding_folder(self, run_id: str, onboarding_agent_id: str) -> AgentFolder:
        run_dir = self.run_dirs.get(run_id)
        return _folder(None if run_dir is None else run_dir / "onboarding" / f"{ONBOARDING_PREFIX}{onboarding_agent_id}")


def database_file(path: Path) -> Path:
    """The database of the data directory ``path`` (or of a Mephisto root holding ``data/``); ConfigError
    saying what is wrong with ``path`` otherwise."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder: give Mephisto's data directory (it holds {DATABASE_FILE})")
    for candidate in (path / DATABASE_FILE, path / "data" / DATABASE_FILE):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path} has no Mephisto database ({DATABASE_FILE}): give Mephisto's data directory")


def read(path: Path) -> MephistoData:
    """Read the whole data directory ``path``; ConfigError (one line) if it is not one we can import."""
    db_file = database_file(path)
    with _connected(db_file) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [table for table in _READ if table not in tables]
        if len(missing) == len(_READ):
            raise ConfigError(f"{db_file} is not a Mephisto database (it has none of Mephisto's tables)")
        if missing:
            raise ConfigError(f"{db_file}: unknown Mephisto schema (no table {', '.join(missing)})")
        for table, columns in _READ.items():
            present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            absent = [column for column in columns if column not in present]
            if absent:
                raise ConfigError(f"{db_file}: unknown Mephisto schema (table {table} has no column "
                                  f"{', '.join(absent)})")
        schema = SCHEMA_CURRENT if "migrations" in tables else SCHEMA_1_1
        rows = {table: [dict(row) for row in connection.execute(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}")] for table, columns in _READ.items()}
        reviews = _reviews(connection, tables)
    data = MephistoData(db_file.parent, schema, rows, reviews)
    runs_root = db_file.parent / "data" / "runs"
    for run in rows["task_runs"]:
        found = sorted(runs_root.glob(f"*/{run['task_run_id']}")) if runs_root.is_dir() else []
        if found:
            data.run_dirs[str(run["task_run_id"])] = found[0]
    return data


@contextmanager
def _connected(db_file: Path) -> Iterator[sqlite3.Connection]:
    try:
        connection = sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True)
        connection.row_factory = sqlite3.Row
        with closing(connection):
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            yield connection
    except sqlite3.DatabaseError as error:
        raise ConfigError(f"{db_file} cannot be read as a Mephisto database: {error}") from None


def _reviews(connection: sqlite3.Connection, tables: set[str]) -> dict[str, list[Review]]:
    found: dict[str, list[Review]] = {}
    for table in _REVIEW_TABLES:
        if table not in tables:
            continue
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if not {"unit_id", "status", "review_note", "bonus"} <= columns:
            continue
        for unit_id, status, note, bonus in connection.execute(
                f"SELECT unit_id, status, review_note, bonus FROM {table} WHERE unit_id IS NOT NULL ORDER BY id"):
            found.setdefault(str(unit_id), []).append(
                Review(status, note, float(bonus) if bonus is not None else None))
    return found


def _folder(folder: Path | None) -> AgentFolder:
    if folder is None or not folder.is_dir():
        return AgentFolder(None, None)
    files = tuple(sorted(p for p in folder.iterdir()
                         if p.is_file() and p.name not in (AGENT_DATA_FILE, AGENT_META_FILE)))
    data = _json(folder / AGENT_DATA_FILE)
    meta = _json(folder / AGENT_META_FILE)
    return AgentFolder(data if isinstance(data, dict) else None, meta if isinstance(meta, dict) else None, files)


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ConfigError(f"{path} is not JSON: {error}") from None


def timestamp(value: Any) -> datetime | None:
    """A Mephisto time as an aware UTC datetime: SQLite's CURRENT_TIMESTAMP text (UTC), or seconds since
    the epoch (``agent_meta.json``)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    text = str(value).replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None
