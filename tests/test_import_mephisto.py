"""``mephisto-dist import-mephisto`` (issue 22): a data directory Mephisto 1.1.1 itself made
(``tests/data/mephisto-1.1.1``, see its README) and one in Mephisto's current schema (built by hand from its
DDL: ``tests/mephisto_current_schema.py``) imported on SQLite and PostgreSQL; importing twice changes
nothing, a dry run writes nothing, bad input is one line, exit 2, and leaves nothing half-made."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from mephisto_dist.db.engine import make_sessionmaker, read_transaction
from mephisto_dist.db.models import (
    Agent,
    Base,
    GrantedQualification,
    OnboardingAgent,
    Qualification,
    TaskRun,
    Worker,
)
from mephisto_dist.errors import ConfigError
from mephisto_dist.imports.importing import ImportSummary, import_data
from mephisto_dist.imports.mephisto_data import SCHEMA_1_1, SCHEMA_CURRENT, read
from mephisto_dist.review.export import unit_records
from mephisto_dist.storage.file import FileStorage
from tests.factories import now
from tests.mephisto_current_schema import make_current_data_dir

DATA_DIR_1_1_1 = Path(__file__).parent / "data" / "mephisto-1.1.1" / "data-dir"


def imported(engine: Engine, storage_root: Path, source: Path, *, dry_run: bool = False) -> ImportSummary:
    return import_data(make_sessionmaker(engine), FileStorage(storage_root), read(source), dry_run=dry_run, now=now())


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {table.name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
                for table in Base.metadata.sorted_tables}


def records(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    with read_transaction(make_sessionmaker(engine)) as session:
        return list(unit_records(session, [run_id], include_unsubmitted=True))


def test_mephisto_1_1_1_s_own_data_dir(engine: Engine, tmp_path: Path) -> None:
    summary = imported(engine, tmp_path / "storage", DATA_DIR_1_1_1)
    assert summary.schema == SCHEMA_1_1
    assert summary.line() == ("imported 1 task, 1 run, 6 units, 4 agents, 3 workers, 2 qualifications, 3 grants, "
                              "1 requester, 1 file; skipped 0 already imported")
    [run_id] = summary.run_ids
    with read_transaction(make_sessionmaker(engine)) as session:
        run = session.get(TaskRun, run_id)
        assert run is not None and run.is_completed and run.bundle_key is None and run.server_url is None
        assert (run.provider_type, run.blueprint_type, run.architect_type) == ("mock", "static_task", "local")
        assert run.config["task"]["task_name"] == "simple-static-task"
        grants = {(w, q, v) for w, q, v in session.execute(
            select(Worker.worker_name, Qualification.name, GrantedQualification.value)
            .join(Worker, Worker.id == GrantedQualification.worker_id)
            .join(Qualification, Qualification.id == GrantedQualification.qualification_id))}
    assert grants == {("ada_sandbox", "good-annotator", 1), ("cleo_sandbox", "good-annotator", 3),
                      ("ben_sandbox", "simple-static-task-block", 1)}
    exported = records(engine, run_id)
    assert [(r["worker_name"], r["status"], (r["review"] or {}).get("decided_by")) for r in exported] == [
        ("ada_sandbox", "accepted", "mephisto"), ("ben_sandbox", "rejected", "mephisto"),
        ("ada_sandbox", "soft_rejected", "mephisto"), ("cleo_sandbox", "completed", None),
        (None, "expired", None), (None, "expired", None)]
    assert [r["data"]["inputs"]["sentence_id"] for r in exported] == ["s1", "s1", "s2", "s2", "s3", "s3"]
    first = exported[0]
    assert first["data"]["outputs"]["rating"] == "5" and first["payment"]["reward_paid"] == 0.05
    [upload] = first["data"]["outputs"]["files"]
    assert (tmp_path / "storage" / upload["storage_key"]).read_bytes() == b"ada's notes\n"
    assert exported[3]["payment"]["reward_pending"] == 0.05  # cleo's unit waits for review here

    before = row_counts(engine)
    again = imported(engine, tmp_path / "storage", DATA_DIR_1_1_1)
    assert again.run_ids == [] and row_counts(engine) == before
    assert again.line().startswith("imported 0 tasks, 0 runs, 0 units, 0 agents, 0 workers, 0 qualifications, "
                                   "0 grants; skipped 11 already imported")


def test_a_dry_run_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    before = row_counts(engine)
    summary = imported(engine, tmp_path / "storage", DATA_DIR_1_1_1, dry_run=True)
    assert summary.line().startswith("would import 1 task, 1 run, 6 units, 4 agents, 3 workers")
    assert row_counts(engine) == before
    assert not (tmp_path / "storage").exists()


def test_mephisto_s_current_schema(engine: Engine, tmp_path: Path) -> None:
    source = make_current_data_dir(tmp_path / "current")
    summary = imported(engine, tmp_path / "storage", source)
    assert summary.schema == SCHEMA_CURRENT
    assert summary.added["unit"] == 3 and summary.added["agent"] == 3 and summary.added["onboarding agent"] == 1
    assert summary.added["project"] == 1 and summary.added["grant"] == 1
    [run_id] = summary.run_ids
    exported = records(engine, run_id)
    assert [(r["status"], r["data"]["outputs"]) for r in exported] == [
        ("accepted", {"label": "yes"}), ("completed", {"label": "no"}), ("expired", None)]
    assert exported[0]["review"]["reason"] == "clear and careful"
    assert exported[0]["metadata"]["tips"][0]["text"] == "read twice"
    assert exported[0]["data"]["inputs"] == {"text": "first"}
    with read_transaction(make_sessionmaker(engine)) as session:
        onboarding = session.scalars(select(OnboardingAgent)).one()
        assert (onboarding.status, onboarding.outputs) == ("approved", {"answer": "4"})
        # Mephisto left one unit assigned: the imported run is closed, so its agent expired too.
        statuses = set(session.scalars(select(Agent.status)))
        assert statuses == {"approved", "completed", "expired"}
    before = row_counts(engine)
    assert imported(engine, tmp_path / "storage", source).run_ids == [] and row_counts(engine) == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bad_row_leaves_nothing_half_made(engine: Engine, tmp_path: Path) -> None:
    source = tmp_path / "broken"
    shutil.copytree(DATA_DIR_1_1_1, source)
    with sqlite3.connect(source / "database.db") as connection:
        connection.execute("UPDATE units SET status = 'lost' WHERE unit_id = 6")
    before = row_counts(engine)
    with pytest.raises(ConfigError, match="unit 6 has status 'lost', which Mephisto does not define"):
        imported(engine, tmp_path / "storage", source)
    assert row_counts(engine) == before


def test_bad_paths_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "not-sqlite").mkdir()
    (tmp_path / "not-sqlite" / "database.db").write_text("hello")
    (tmp_path / "other").mkdir()
    with sqlite3.connect(tmp_path / "other" / "database.db") as connection:
        connection.execute("CREATE TABLE notes (id INTEGER)")
    (tmp_path / "old").mkdir()
    shutil.copy(DATA_DIR_1_1_1 / "database.db", tmp_path / "old" / "database.db")
    with sqlite3.connect(tmp_path / "old" / "database.db") as connection:
        connection.execute("DROP INDEX agent_by_worker_by_status_index")
        connection.execute("ALTER TABLE agents DROP COLUMN status")
    cases = {tmp_path / "missing": "does not exist",
             tmp_path / "empty": "has no Mephisto database (database.db)",
             tmp_path / "not-sqlite": "cannot be read as a Mephisto database",
             tmp_path / "other": "is not a Mephisto database",
             tmp_path / "old": "unknown Mephisto schema (table agents has no column status)"}
    for path, said in cases.items():
        with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")) as raised:
            read(path)
        assert "\n" not in str(raised.value)


def test_the_command_and_what_follows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """On the embedded default: import, then ``runs``, ``status``, ``export`` work on the imported run;
    a bad path is one ``error:`` line and exit 2."""
    from mephisto_dist.cli.app import main

    monkeypatch.setenv("MEPHISTO_DIST_DATA_DIR", str(tmp_path / "data"))
    for name in ("MEPHISTO_DIST_DATABASE_URL", "MEPHISTO_DIST_STORAGE_URL", "MEPHISTO_DIST_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)

    def cli(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mephisto-dist", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, err

    code, out, err = cli("import-mephisto", str(DATA_DIR_1_1_1), "--dry-run")
    assert code == 0 and "would import 1 task, 1 run, 6 units" in out, err
    code, out, err = cli("import-mephisto", str(DATA_DIR_1_1_1))
    assert code == 0 and "imported 1 task, 1 run, 6 units, 4 agents, 3 workers" in out, err
    code, out, _ = cli("runs")
    assert code == 0 and "simple-static" in out
    code, out, _ = cli("status", "1")
    assert code == 0 and "finished: 4 of 6 units completed, 2 expired" in out
    code, out, _ = cli("export", "--run", "1")
    assert code == 0 and out.count("\n") == 6 and '"reads naturally"' in out
    code, out, err = cli("import-mephisto", str(tmp_path / "nowhere"))
    assert (code, out, err) == (2, "", f"error: {tmp_path / 'nowhere'} does not exist\n")
