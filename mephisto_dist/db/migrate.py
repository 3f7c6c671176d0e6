"""Alembic migrations, run programmatically: by ``mephisto-dist migrate`` (the Procfile's release step)
and by an embedded attached run; every other command only checks the schema (:func:`check_schema`).

Checking costs one query and no Alembic: Alembic (a quarter of a second of imports) is loaded only
to migrate, so a command on an up-to-date schema starts that much sooner.

An empty SQLite database (the embedded default's first run in a data directory) is given the head
schema from ``sqlite_schema.sql``, the statements the migrations leave in ``sqlite_master``, as Rails
loads ``schema.rb`` into a new database: the same tables, columns, constraints and indexes (a test
migrates a database with Alembic and compares), without Alembic's imports and its table rebuilds
(together about a fifth of a second before the first unit). Any other database, and a snapshot of another revision, is
migrated by Alembic."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from mephisto_dist.db.engine import driver_errors, make_engine
from mephisto_dist.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_SCHEMA = Path(__file__).with_name("sqlite_schema.sql")
"""The head schema of a SQLite database, as the migrations leave it: written by
:func:`sqlite_schema_script`, loaded by :func:`upgrade` into an empty SQLite database."""
HEAD_REVISION = "0017"
"""The schema revision this code needs: the head of ``migrations/versions`` (a test holds them equal;
a new migration moves it)."""
VERSION_TABLE = "alembic_version"


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did: the schema's revision before (``None``: there was no schema) and after;
    the same when it was up to date (or another process upgraded it first)."""

    before: str | None
    after: str | None


def upgrade(engine: Engine, revision: str = "head") -> Upgrade:
    """Migrate to ``revision``; a schema already at the head is left alone without loading Alembic."""
    if revision == "head":
        current = current_revision(engine)
        if current == HEAD_REVISION:
            return Upgrade(before=current, after=current)
        if current is None and engine.dialect.name == "sqlite":
            loaded = _load_sqlite_schema(engine)
            if loaded is not None:
                return loaded
    from alembic import command
    from alembic.runtime.migration import MigrationInfo

    config = alembic_config(engine)
    applied: list[MigrationInfo] = config.attributes.setdefault("applied", [])
    with driver_errors(engine):
        command.upgrade(config, revision)
    if applied:
        first = applied[0].down_revision_ids
        return Upgrade(before=first[0] if first else None, after=applied[-1].up_revision_id)
    current = schema_state(engine)[0]
    return Upgrade(before=current, after=current)


def _load_sqlite_schema(engine: Engine) -> Upgrade | None:
    """The head schema from :data:`SQLITE_SCHEMA` into an empty SQLite database, in one transaction
    (which begins with the write lock: a second process doing the same waits, then finds it done).
    ``None`` when Alembic must do it: the snapshot is of another revision, or the database holds
    tables already."""
    header, _, script = SQLITE_SCHEMA.read_text(encoding="utf-8").partition("\n")
    if header != _snapshot_header(HEAD_REVISION):
        return None
    with driver_errors(engine), engine.begin() as connection:
        if inspect(connection).has_table(VERSION_TABLE):  # made by another process meanwhile
            found = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
            return Upgrade(before=found, after=found)
        if connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
            return None
        # One statement at a time, inside the transaction (sqlite3's executescript commits first).
        for statement in _statements(script):
            connection.exec_driver_sql(statement)
    return Upgrade(before=None, after=HEAD_REVISION)


def _statements(script: str) -> Iterator[str]:
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


def _snapshot_header(revision: str) -> str:
    return f"-- the head schema (revision {revision}) of a SQLite database, written by db.migrate.sqlite_schema_script"


def sqlite_schema_script(engine: Engine) -> str:
    """What :data:`SQLITE_SCHEMA` holds for the SQLite database ``engine`` (migrated to the head by
    Alembic): its ``sqlite_master`` statements in the order SQLite made them, then its revision row.
    After a new migration: ``python -c 'from mephisto_dist.db.migrate import write_sqlite_schema;
    write_sqlite_schema()'``."""
    with engine.connect() as connection:
        statements = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid").scalars()
        revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one()
        lines = [_snapshot_header(revision), *(f"{statement};" for statement in statements),
                 f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{revision}');"]
    return "\n".join(lines) + "\n"


def write_sqlite_schema() -> None:
    """Rewrite :data:`SQLITE_SCHEMA` from a SQLite database that Alembic migrates to the head."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{scratch}/schema.db")
        try:
            upgrade(engine, HEAD_REVISION)  # named, not "head": Alembic, never the snapshot
            SQLITE_SCHEMA.write_text(sqlite_schema_script(engine), encoding="utf-8")
        finally:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, ``None`` when it has no schema at all."""
    with driver_errors(engine), engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def migrations_head(engine: Engine) -> str:
    """The head of the migration scripts, as Alembic reads them (what :data:`HEAD_REVISION` must be)."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(alembic_config(engine)).get_current_head())


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """The database's revision (``None``: no schema at all) and the one this code needs."""
    return current_revision(engine), HEAD_REVISION


def check_schema(engine: Engine, *, create_embedded: bool) -> None:
    """Refuse to work on a schema this code does not match; only ``mephisto-dist migrate`` (and an
    embedded run) changes it, so that researchers on several machines never race migrations. A
    database with no schema at all is created when ``create_embedded`` (the embedded SQLite's first use)."""
    current, head = schema_state(engine)
    if current == head:
        return
    if current is None and create_embedded:
        upgrade(engine)
        return
    state = "has no schema yet" if current is None else f"is at schema revision {current}, this version needs {head}"
    raise ConfigError(f"the database {engine.url.render_as_string(hide_password=True)} {state}: "
                      "run mephisto-dist migrate")
