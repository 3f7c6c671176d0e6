"""The per-process wiring: engine, sessions, Redis, limiter and queue built once from Settings.

Nothing connects at construction; each resource is built on first use, so importing and creating a
Runtime is free.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import make_engine, make_sessionmaker
from mephisto_dist.limiter import Limiter, RateBucket
from mephisto_dist.limiter.redis_pool import AsyncSwap, RedisLimiter, RedisRateBucket
from mephisto_dist.queue import CeleryQueue
from mephisto_dist.settings import Settings
from mephisto_dist.storage import Storage, open_storage
from mephisto_dist.storage.bundle_cache import BundleCache

REDIS_MAX_CONNECTIONS = 10_000
"""Connections one process may hold to Redis at once (made only when needed). redis-py 8 caps a pool at
100 and then refuses a command outright; a runner worker holds one per runner waiting on ``act`` (a
``BLPOP``), so 500 conversations on one worker need 500. Redis itself accepts 10,000 clients."""

class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.effective_redis_url,
                                    retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 2),
                                    max_connections=REDIS_MAX_CONNECTIONS, **self._redis_options())

    def async_swap(self) -> AsyncSwap | None:
        """The limiter's swap for the calling event loop (``AsyncSwap``: a new client, made on that loop),
        with :attr:`redis`'s timeouts and retries; None where the limiter is not in Redis."""
        if not isinstance(self.limiter, RedisLimiter):
            return None
        return AsyncSwap(redis.asyncio.Redis.from_url(
            self.settings.effective_redis_url, retry=redis.asyncio.retry.Retry(ExponentialBackoff(cap=1.0, base=0.05), 2),
            **self._redis_options()))

    def _redis_options(self) -> dict[str, Any]:
        # A partition costs a bounded wait, a few quick retries, then an error (ServiceError at the
        # limiter's boundary), never a hung web thread or Celery task.
        timeout_s = self.settings.redis_timeout_s
        return {"health_check_interval": 30, "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]}

    @cached_property
    def limiter(self) -> Limiter:
        return RedisLimiter(self.redis)

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings.effective_storage_url)

    @cached_property
    def bundles(self) -> BundleCache:
        return BundleCache(self.storage, self.settings.bundle_cache_dir)

    @cached_property
    def rate_bucket(self) -> RateBucket:
        """The provider-call bucket shared by every process (``MEPHISTO_DIST_PROVIDER_CALLS_PER_S``)."""
        return RedisRateBucket(self.redis)

    @cached_property
    def queue(self) -> CeleryQueue:
        return CeleryQueue(self.settings.broker_url, self.settings.redis_timeout_s)

    def close(self) -> None:
        if "queue" in self.__dict__:
            self.queue.close()
        if "redis" in self.__dict__:
            self.redis.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
