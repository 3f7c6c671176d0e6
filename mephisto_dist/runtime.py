"""The per-process wiring: engine, sessions, Redis, limiter and queue built once from Settings.

Nothing connects at construction; each resource is built on first use, so importing and creating a
Runtime is free.
"""

from __future__ import annotations

from functools import cached_property

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.bundles import BundleCache
from mephisto_dist.db.engine import make_engine, make_sessionmaker
from mephisto_dist.limiter import Limiter
from mephisto_dist.limiter.redis_pool import RedisLimiter
from mephisto_dist.queue import CeleryQueue
from mephisto_dist.settings import Settings
from mephisto_dist.storage import Storage, open_storage


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
        return redis.Redis.from_url(self.settings.effective_redis_url, health_check_interval=30)

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
    def queue(self) -> CeleryQueue:
        return CeleryQueue(self.settings.broker_url)

    def close(self) -> None:
        if "queue" in self.__dict__:
            self.queue.close()
        if "redis" in self.__dict__:
            self.redis.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
