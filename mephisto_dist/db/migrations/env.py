"""Alembic environment: migrations run on the engine handed over in ``config.attributes``.

On SQLite, Alembic's batch mode rebuilds a table to alter it, which foreign keys forbid while they are
enforced; they are switched off for the migration (outside any transaction, where SQLite honours the
pragma) and back on afterwards.

Two migrations at once (researchers on several machines, or two release steps) are harmless: on
PostgreSQL an advisory lock taken in the migration's transaction, before Alembic reads the current
revision, makes the second wait and then find nothing to do; on SQLite the transaction begins with the
write lock (``BEGIN IMMEDIATE``, see ``db.engine``), which does the same.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Engine, text

from mephisto_dist.db.models import Base

MIGRATION_LOCK = 0x6D64_6D67  # "mdmg": the one PostgreSQL advisory lock the migrations take

engine: Engine = context.config.attributes["engine"]
# The steps this migration applied (none when another process did them first): ``db.migrate.upgrade`` says so.
applied: list[MigrationInfo] = context.config.attributes.setdefault("applied", [])


def _record(ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]) -> None:
    applied.append(step)


with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    raw = connection.connection.driver_connection
    if sqlite and raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite,
                          on_version_apply=_record)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite and raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")
