"""Alembic environment: migrations run on the engine handed over in ``config.attributes``.

On SQLite, Alembic's batch mode rebuilds a table to alter it, which foreign keys forbid while they are
enforced; they are switched off for the migration (outside any transaction, where SQLite honours the
pragma) and back on afterwards.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from mephisto_dist.db.models import Base

engine: Engine = context.config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    raw = connection.connection.driver_connection
    if sqlite and raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite and raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")
