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

from alembic import context
from sqlalchemy import Engine, text

from mephisto_dist.db.models import Base

MIGRATION_LOCK = 0x6D64_6D67  # "mdmg": the one PostgreSQL advisory lock the migrations take

engine: Engine = context.config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    raw = connection.connection.driver_connection
    if sqlite and raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite and raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")
