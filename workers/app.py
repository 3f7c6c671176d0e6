"""The one Celery app factory. Every process of a deployment builds its app here from Settings."""

from __future__ import annotations

from celery import Celery

from mephisto_dist.queue import celery_config
from mephisto_dist.settings import Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("mephisto_dist")
    app.conf.update(celery_config(settings.broker_url))
    app.conf.worker_send_task_events = True
    app.conf.task_send_sent_event = True
    return app
