"""Alembic migrations, run programmatically: by ``mephisto-dist migrate`` (the Procfile's release step)
and by an embedded attached run; every other command only checks the schema (:func:`check_schema`).

Checking costs one query and no Alembic: Alembic (a quarter of a second of imports) is loaded only
to migrate, so a command on an up-to-date schema starts that much sooner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from mephisto_dist.db.engine import driver_errors
from mephisto_dist.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
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
