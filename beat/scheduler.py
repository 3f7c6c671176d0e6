"""Beat's scheduler: celery-redbeat's, whose lock in Redis lets exactly one beat of a deployment fire
the schedule (a second one waits for the lock and takes over when the first dies), plus a heartbeat
on every tick so that ``status`` can tell whether beat runs."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import redis
from redbeat import RedBeatScheduler

from mephisto_dist import heartbeats

log = logging.getLogger(__name__)


class HeartbeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    """Ticks only while holding the lock: the heartbeat therefore names the beat that fires."""

    _heartbeat_client: redis.Redis | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = float(super().tick(*args, **kwargs))
        self._heartbeat()
        return interval

    def _heartbeat(self) -> None:
        if self._heartbeat_client is None:
            self._heartbeat_client = redis.Redis.from_url(self.app.conf.redbeat_redis_url, socket_timeout=5)
        try:
            heartbeats.beat(self._heartbeat_client, "beat", f"{socket.gethostname()}:{os.getpid()}")
        except redis.RedisError as error:  # the schedule goes on; status will say beat went quiet
            log.warning("beat could not leave its heartbeat: %s", error)
