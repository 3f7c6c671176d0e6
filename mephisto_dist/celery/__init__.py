"""The Celery faces: the worker app (``celery -A mephisto_dist.celery.worker worker``: :mod:`.worker`,
its tasks in :mod:`.tasks`, :mod:`.runner_tasks`, :mod:`.review_tasks`, :mod:`.reconcile_tasks`) and beat
(``celery -A mephisto_dist.celery.beat beat``: :mod:`.beat`, the schedule table in :mod:`.schedule`).
Importing this package starts nothing; the two app modules build their app on import, as Celery's ``-A``
expects."""
