"""The Celery worker process: ``celery -A mephisto_dist.celery.worker worker``.

It runs the TaskRunner of every Assignment as short, idempotent tasks triggered by events (run
launched, unit assigned, unit submitted) and the reconcilers beat schedules. No task waits for a human.
"""

from mephisto_dist.celery.app import make_celery
from mephisto_dist.celery.heartbeat import install_heartbeat
from mephisto_dist.celery.schedule import sweep_tasks
from mephisto_dist.celery.sweep_logs import quiet_idle_sweeps
from mephisto_dist.settings import load_settings

_settings = load_settings()
app = make_celery(_settings)
install_heartbeat(app, _settings)
quiet_idle_sweeps(sweep_tasks(_settings))

# Imported for their side effect: each registers its tasks on ``app``.
from mephisto_dist.celery import reconcile_tasks, review_tasks, runner_tasks, tasks  # noqa: F401
