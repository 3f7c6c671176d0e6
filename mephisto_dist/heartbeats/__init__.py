"""Heartbeats of Celery workers and beat in Redis, and reading them back for ``status``.

Workers beat from a bootstep in their main process (``mephisto_dist.celery.heartbeat``), beat from its scheduler's tick
(``mephisto_dist.celery.scheduler``); only the beat holding the lock ticks, so a waiting second beat is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from mephisto_dist.errors import ServiceError
from mephisto_dist.heartbeats.keys import FORGET_AFTER_S, Role, heartbeat_key


@dataclass(frozen=True)
class Seen:
    """A process and how long ago (by the Redis clock) it last left a heartbeat."""

    name: str
    age_s: float


def _server_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def beat(client: redis.Redis, role: Role, name: str) -> None:
    """Record that ``name`` is alive now; forget processes silent for a week."""
    now = _server_now(client)
    key = heartbeat_key(role)
    with client.pipeline() as pipe:
        pipe.zadd(key, {name: now})
        pipe.zremrangebyscore(key, "-inf", now - FORGET_AFTER_S)
        pipe.execute()


def last_seen(client: redis.Redis, role: Role) -> list[Seen]:
    """Every remembered process of ``role``, most recently seen first."""
    try:
        now = _server_now(client)
        members = cast(list[tuple[bytes, float]],
                       client.zrevrange(heartbeat_key(role), 0, -1, withscores=True))
    except redis.RedisError as error:
        raise ServiceError(f"Redis does not answer: {error}") from None
    return [Seen(name.decode(), max(0.0, now - float(score)))
            for name, score in members]
