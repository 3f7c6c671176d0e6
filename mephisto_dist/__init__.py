"""mephisto-dist: Mephisto's crowdsourcing tasks on a distributed runtime.

The folders are the architecture (README's "Layout" has the map; ``.importlinter`` checks the layers):

- faces: ``cli`` (the ``mephisto-dist`` command), ``web`` (the worker-facing router protocol), ``celery``
  (the Celery worker and beat apps);
- use cases: ``work`` (a worker's way to a unit), ``runs`` (a run's life), ``review`` (decisions, payment,
  qualifications, export), ``reconcile`` (beat's reconcilers), ``runners`` (TaskRunner events, the live
  channel);
- plug-ins behind contracts: ``blueprints``, ``providers``, ``architects``; ``compat`` (the stand-in
  ``mephisto`` modules task scripts import);
- adapters named by technology: ``db`` (SQLAlchemy), ``limiter`` (Redis pools), ``storage`` (file, S3),
  ``queue`` (sending Celery tasks), ``metrics`` (Prometheus), ``heartbeats`` (Redis);
- ``domain``: pure decisions; ``config``: task folders and their arguments; ``errors``;
- at the root: ``settings`` (the environment, read once) and ``runtime`` (the composition root).
``mturk_local`` is the local Mechanical Turk for tests and rehearsals, outside the production path.
"""

__version__ = "0.1.0"
