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

REDIS_RETRY_S = 1.0


class HeartbeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    """Ticks only while holding the lock: the heartbeat therefore names the beat that fires."""

    _heartbeat_client: redis.Redis | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            interval = self._tick(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            # Redis is away: beat waits for it rather than dying (a deployment's beat has no one to
            # restart it at once); the schedule resumes when it answers again.
            log.warning("beat cannot reach Redis (%s); trying again in %.0f s", error, REDIS_RETRY_S)
            return REDIS_RETRY_S
        self._heartbeat()
        return interval

    def _tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return float(super().tick(*args, **kwargs))
        except redis.exceptions.LockNotOwnedError:
            # Redis restarted or was flushed: the lock and the stored schedule are gone. Take the lock
            # again (waiting, as a second beat would, if another took it meanwhile) and store the
            # schedule anew, or beat would die here, or go on firing nothing.
            log.warning("beat lost its lock in Redis (restarted or flushed?): taking it again")
            self.lock.acquire()
            self.setup_schedule()
            return float(super().tick(*args, **kwargs))

    def _heartbeat(self) -> None:
        if self._heartbeat_client is None:
            self._heartbeat_client = redis.Redis.from_url(self.app.conf.redbeat_redis_url, socket_timeout=5)
        try:
            heartbeats.beat(self._heartbeat_client, "beat", f"{socket.gethostname()}:{os.getpid()}")
        except redis.RedisError as error:  # the schedule goes on; status will say beat went quiet
            log.warning("beat could not leave its heartbeat: %s", error)
