"""Celery beat: ``celery -A beat beat``. The schedule is one table (``beat.schedule.SCHEDULE``); the
reconcilers it fires run on the workers and are safe to run twice at once."""

from beat.schedule import SCHEDULE
from mephisto_dist.settings import load_settings
from workers.app import make_celery

app = make_celery(load_settings())
app.conf.beat_schedule = SCHEDULE
