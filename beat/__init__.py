"""Celery beat: ``celery -A beat beat``. The schedule is one table (``beat.schedule``); the reconcilers
it fires (``mephisto_dist.reconcile``) run on the workers and are safe to run twice at once."""

from beat.schedule import make_schedule
from mephisto_dist.settings import load_settings
from workers.app import make_celery

_settings = load_settings()
app = make_celery(_settings)
app.conf.beat_schedule = make_schedule(_settings)
