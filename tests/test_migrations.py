"""Migrations run only in ``mephisto-dist migrate`` (and an embedded run), and two at once are
harmless; any other command on a schema behind says to run ``mephisto-dist migrate``, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mephisto_dist.db.engine import make_engine
from mephisto_dist.db.migrate import (
    HEAD_REVISION,
    SQLITE_SCHEMA,
    Upgrade,
    migrations_head,
    schema_state,
    upgrade,
)
from mephisto_dist.errors import ServiceError
from tests.system import ROOT


def env_for(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"), "MEPHISTO_DIST_DATABASE_URL": database_url})
    return env


@pytest.mark.system
def test_two_migrations_at_once_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    env = env_for(tmp_path, pg_url)
    migrations = [subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", "migrate"], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [m.communicate(timeout=120) for m in migrations]
    assert [m.returncode for m in migrations] == [0, 0, 0], outcomes
    engine = make_engine(pg_url)
    try:
        current, head = schema_state(engine)
        assert current == head
        with engine.connect() as connection:
            assert connection.execute(text("select count(*) from alembic_version")).scalar() == 1
            assert connection.execute(text("select count(*) from unit")).scalar() == 0
    finally:
        engine.dispose()


@pytest.mark.system
def test_a_command_on_a_schema_behind_says_to_migrate(tmp_path: Path, database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0002")
    engine.dispose()
    env = env_for(tmp_path, database_url)
    for command in (["runs"], ["status", "1"], ["limits", "1"]):
        refused = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *command], cwd=ROOT, env=env,
                                 capture_output=True, text=True, check=False)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, (command, refused.stderr)
        assert "schema revision 0002" in lines[0] and lines[0].endswith("run mephisto-dist migrate"), lines
    engine = make_engine(database_url)
    try:
        assert schema_state(engine)[0] == "0002"  # nothing migrated behind the researcher's back
    finally:
        engine.dispose()
    migrated = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "migrate"], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=False)
    assert migrated.returncode == 0, migrated.stderr
    listed = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "runs"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr


def test_migrate_says_what_it_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Created on an empty database, upgraded from a revision behind, up to date: each said, with the
    database's URL (never its password)."""
    from mephisto_dist.cli.app import main

    def migrate(database_url: str) -> str:
        monkeypatch.setenv("MEPHISTO_DIST_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("MEPHISTO_DIST_DATABASE_URL", database_url)
        monkeypatch.setattr(sys, "argv", ["mephisto-dist", "migrate"])
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsys.readouterr()
        assert (exited.value.code, err) == (0, ""), err
        return out

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    engine = make_engine(url)
    head = schema_state(engine)[1]
    engine.dispose()
    assert migrate(url) == f"created the database schema (revision {head}) in {url}\n"
    assert migrate(url) == f"the database schema is up to date (revision {head}) in {url}\n"
    behind = f"sqlite:///{tmp_path / 'behind.db'}"
    engine = make_engine(behind)
    upgrade(engine, "0002")
    engine.dispose()
    assert migrate(behind) == f"upgraded the database schema from revision 0002 to {head} in {behind}\n"


def test_upgrade_reports_the_revisions_it_moved_between(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        head = schema_state(engine)[1]
        assert upgrade(engine, "0002") == Upgrade(before=None, after="0002")
        assert upgrade(engine) == Upgrade(before="0002", after=head)
        assert upgrade(engine) == Upgrade(before=head, after=head)
    finally:
        engine.dispose()


def test_the_code_needs_the_head_of_the_migrations(tmp_path: Path) -> None:
    # The schema check reads HEAD_REVISION instead of loading Alembic: a new migration must move it.
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert migrations_head(engine) == HEAD_REVISION
        assert schema_state(engine) == (None, HEAD_REVISION)
        assert upgrade(engine) == Upgrade(before=None, after=HEAD_REVISION)
        assert upgrade(engine) == Upgrade(before=HEAD_REVISION, after=HEAD_REVISION)
        assert schema_state(engine) == (HEAD_REVISION, HEAD_REVISION)
    finally:
        engine.dispose()


def _master(engine: Engine) -> list[tuple[str, str, str, list[str]]]:
    """What ``sqlite_master`` holds: each table's and index's statement as its sorted lines, since
    Alembic's table rebuilds list a table's constraints in no fixed order."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
        return [(row[0], row[1], row[2], sorted(line.strip().rstrip(",") for line in (row[3] or "").splitlines()))
                for row in rows]


def test_an_empty_sqlite_database_gets_the_schema_the_migrations_make(tmp_path: Path) -> None:
    """The embedded default's first run loads ``sqlite_schema.sql`` instead of running every migration:
    it must leave the schema Alembic leaves, so that later migrations meet what they expect."""
    migrated = make_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    loaded = make_engine(f"sqlite:///{tmp_path / 'loaded.db'}")
    try:
        regenerate = ("sqlite_schema.sql is not what the migrations make: python -c 'from mephisto_dist.db.migrate "
                      "import write_sqlite_schema; write_sqlite_schema()'")
        # Of another revision, it would be left unused (Alembic migrates): a new migration must rewrite it.
        assert SQLITE_SCHEMA.read_text(encoding="utf-8").startswith(f"-- the head schema (revision {HEAD_REVISION})"), \
            regenerate
        assert upgrade(migrated, HEAD_REVISION) == Upgrade(before=None, after=HEAD_REVISION)  # by Alembic
        assert upgrade(loaded) == Upgrade(before=None, after=HEAD_REVISION)
        assert _master(loaded) == _master(migrated), regenerate
        assert schema_state(loaded) == (HEAD_REVISION, HEAD_REVISION)
        assert upgrade(loaded) == Upgrade(before=HEAD_REVISION, after=HEAD_REVISION)
    finally:
        migrated.dispose()
        loaded.dispose()


def test_a_sqlite_database_with_tables_of_its_own_is_left_to_alembic(tmp_path: Path) -> None:
    """Only an empty database gets the snapshot: one holding tables but no revision is migrated by
    Alembic, which fails on the table it would create, as it always did, and writes nothing."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE project (id INTEGER PRIMARY KEY)")
        with pytest.raises(ServiceError, match="table project already exists"):
            upgrade(engine)
        assert [row[1] for row in _master(engine)] == ["project"]
    finally:
        engine.dispose()
