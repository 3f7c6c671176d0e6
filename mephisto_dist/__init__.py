"""mephisto-dist: Mephisto's crowdsourcing tasks on a distributed runtime.

Packages: ``domain`` (pure status machines and decisions), ``db`` (SQLAlchemy models, engine,
status writes), ``limiter`` (Redis concurrency pools), ``providers`` / ``architects`` /
``blueprints`` (Mephisto's three abstractions), ``taskconfig`` (task-folder configs),
``web`` (the worker-facing router protocol), ``cli`` (the ``mephisto-dist`` command).
"""

__version__ = "0.1.0"
