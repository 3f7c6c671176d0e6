"""The Celery worker process: ``celery -A workers worker``.

It runs the TaskRunner of every Assignment as short, idempotent tasks triggered by events (run
launched, unit assigned, unit submitted) and the reconcilers beat schedules. No task waits for a human.
"""

from mephisto_dist.settings import load_settings
from workers.app import make_celery
from workers.heartbeat import install_heartbeat

_settings = load_settings()
app = make_celery(_settings)
install_heartbeat(app, _settings)

import workers.review_tasks  # noqa: F401  (registers the review tasks on ``app``)
from workers import tasks  # noqa: F401  (registers the tasks on ``app``)
