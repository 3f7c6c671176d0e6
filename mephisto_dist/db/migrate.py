"""Alembic migrations, run programmatically: by ``mephisto-dist migrate`` (the Procfile's release step)
and by an embedded attached run; every other command only checks the schema (:func:`check_schema`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from mephisto_dist.db.engine import driver_errors
from mephisto_dist.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
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
    config = alembic_config(engine)
    applied: list[MigrationInfo] = config.attributes.setdefault("applied", [])
    with driver_errors(engine):
        command.upgrade(config, revision)
    if applied:
        first = applied[0].down_revision_ids
        return Upgrade(before=first[0] if first else None, after=applied[-1].up_revision_id)
    current = schema_state(engine)[0]
    return Upgrade(before=current, after=current)


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """The database's revision (``None``: no schema at all) and the one this code needs."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with driver_errors(engine), engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, str(head)


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
