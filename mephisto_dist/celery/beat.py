"""Celery beat: ``celery -A mephisto_dist.celery.beat beat``. The schedule is one table (``mephisto_dist.celery.schedule``); the reconcilers
it fires (``mephisto_dist.reconcile.runs``) run on the workers and are safe to run twice at once. Exactly one
beat of a deployment fires it: the scheduler (``mephisto_dist.celery.scheduler``) holds a lock in Redis, and a second
beat started by mistake waits for that lock."""

from mephisto_dist.celery.app import make_celery
from mephisto_dist.celery.schedule import make_schedule, sweep_tasks
from mephisto_dist.celery.scheduler import HeartbeatScheduler
from mephisto_dist.celery.sweep_logs import quiet_idle_sweeps
from mephisto_dist.heartbeats import keys as heartbeat_keys
from mephisto_dist.settings import load_settings

_settings = load_settings()
app = make_celery(_settings)
app.conf.beat_schedule = make_schedule(_settings)
app.conf.beat_scheduler = HeartbeatScheduler
quiet_idle_sweeps(sweep_tasks(_settings))  # "Sending due task" every 2 s is DEBUG, not INFO
app.conf.redbeat_redis_url = _settings.effective_redis_url
app.conf.redbeat_key_prefix = heartbeat_keys.beat_prefix()
app.conf.redbeat_lock_timeout = max(1, int(_settings.beat_lock_timeout_s))
# The loop wakes at least this often: to tick (extend the lock, heartbeat) and, while waiting, to retry
# the lock. A third of the lock's lifetime leaves two missed ticks before another beat may take over.
app.conf.beat_max_loop_interval = max(1.0, min(_settings.heartbeat_every_s, _settings.beat_lock_timeout_s / 3))
