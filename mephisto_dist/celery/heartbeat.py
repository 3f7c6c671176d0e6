"""A worker bootstep that leaves the worker's heartbeat in Redis from its main process, so ``status`` can
say whether any Celery worker runs and when each was last seen, busy or idle."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery, bootsteps

from mephisto_dist import heartbeats
from mephisto_dist.settings import Settings

log = logging.getLogger(__name__)


def install_heartbeat(app: Celery, settings: Settings) -> None:
    class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
        requires = ("celery.worker.components:Timer",)

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            super().__init__(worker, **kwargs)
            self._client: redis.Redis | None = None
            self._timer_ref: Any = None

        def start(self, worker: Any) -> None:
            self._client = redis.Redis.from_url(settings.effective_redis_url, socket_timeout=5)
            self._beat(worker.hostname)
            self._timer_ref = worker.timer.call_repeatedly(settings.heartbeat_every_s, self._beat,
                                                           (worker.hostname,), priority=10)

        def stop(self, worker: Any) -> None:
            if self._timer_ref is not None:
                self._timer_ref.cancel()
            if self._client is not None:
                self._client.close()

        def _beat(self, hostname: str) -> None:
            assert self._client is not None
            try:
                heartbeats.beat(self._client, "worker", hostname)
            except redis.RedisError as error:
                log.warning("worker %s could not leave its heartbeat: %s", hostname, error)

    app.steps["worker"].add(Heartbeat)
