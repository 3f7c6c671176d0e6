"""The one Celery app factory. Every process of a deployment builds its app here from Settings."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import task_postrun

from mephisto_dist import metrics
from mephisto_dist.celery import transport
from mephisto_dist.celery.limits import celery_limits
from mephisto_dist.queue import celery_config
from mephisto_dist.settings import Settings


def make_celery(settings: Settings, *, record_metrics: bool = True) -> Celery:
    """The app; ``record_metrics``: this process records into the machine's metrics folder (every
    process but Flower, whose own Prometheus metrics are not ours)."""
    if record_metrics:
        metrics.enable(settings)  # before the prefork pool starts: its children inherit the folder
    transport.use_for_redis_urls()  # a worker outlives its broker's restart during a task (see the module)
    app = Celery("mephisto_dist")
    app.conf.update(celery_config(settings.broker_url, settings.redis_timeout_s))
    app.conf.update(celery_limits(settings))
    app.conf.worker_send_task_events = True
    app.conf.task_send_sent_event = True
    task_postrun.connect(_count_outcome, weak=False, dispatch_uid="mephisto_dist.metrics.celery_tasks")
    return app


def _count_outcome(sender: Any = None, state: str | None = None, **_: Any) -> None:
    if sender is not None and state:
        metrics.record_celery_task(str(sender.name), state)
