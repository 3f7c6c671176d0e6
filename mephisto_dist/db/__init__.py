"""Persistence: SQLAlchemy 2.0 models, the engine and session factory, Alembic migrations, and the one
place where statuses are written (``transitions``). Models hold no session and do no I/O."""
