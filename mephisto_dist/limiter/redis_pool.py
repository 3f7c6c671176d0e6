"""The limiter in Redis: pools and rate buckets shared by every process and machine.

Each operation is one Lua script (``*.lua`` beside this module, registered once per client), so an
acquire across several pools is all-or-nothing and every decision uses the Redis server's clock.
Connection failures become :class:`~mephisto_dist.errors.ServiceError` here, at the boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.asyncio
from redis.commands.core import Script

from mephisto_dist.errors import ServiceError
from mephisto_dist.limiter import Acquired, PoolLimit, PoolState, check_cap, check_lease, check_rate, keys
from mephisto_dist.settings import REDIS_HINT

DEFAULT_TIMEOUT_S = 5.0


@functools.cache
def _lua(name: str) -> str:
    return Path(__file__).with_name(name).read_text(encoding="utf-8")


def _lease_arg(lease_s: float | None) -> str:
    return "never" if lease_s is None else repr(lease_s * 1000.0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def describe(client: redis.Redis | redis.asyncio.Redis) -> str:
    """The URL a client talks to, for messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def connect(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> redis.Redis:
    """A client for ``url`` that gives up on a silent server instead of hanging.

    It keeps one connection (redis-py serialises threads on it with a lock) because a pooled client
    polls its socket before every command, an extra system call that costs as much as the script.
    """
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, single_connection_client=True,
    )


class _Boundary:
    """Turns the driver's connection errors into ServiceError naming the server."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            raise ServiceError(f"Redis at {self.url} is not answering: {error}; {REDIS_HINT}") from error


def _take_arguments(holders: list[str], pools: Sequence[PoolLimit], prefix: str) -> tuple[list[str], list[str | int]]:
    """acquire.lua's and swap.lua's keys and arguments: each pool's three keys, and its three arguments
    after the holders."""
    script_keys: list[str] = []
    args: list[str | int] = list(holders)
    for limit in pools:
        script_keys += (keys.pool_key(limit.pool, prefix), keys.cap_key(limit.pool, prefix),
                        keys.ready_key(limit.pool, prefix))
        args += (limit.cap, _lease_arg(limit.lease_s), "1" if limit.rebuilt_from_db else "0")
    return script_keys, args


def _taken(refused: int, pools: Sequence[PoolLimit]) -> Acquired:
    """What acquire.lua's or swap.lua's answer says: 0 taken, -n pool n lost, n refused by pool n, more
    than the pools: held already."""
    if refused == 0:
        return Acquired(ok=True)
    if refused < 0:
        return Acquired(ok=False, lost_pool=pools[-refused - 1].pool)
    if refused > len(pools):
        return Acquired(ok=False, held_pool=pools[refused - len(pools) - 1].pool)
    return Acquired(ok=False, refused_pool=pools[refused - 1].pool)


class AsyncSwap:
    """:meth:`RedisLimiter.swap` for an event loop: the same script through ``redis.asyncio``, so that a
    capped submission served on the web's event loop hands its slot over without blocking it
    (``web.context``). Its client is the event loop's: make it on the loop that uses it."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = keys.PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._boundary = _Boundary(describe(client))
        self._swap = client.register_script(_lua("swap.lua"))

    async def swap(self, old_holder: str, holder: str, pools: Sequence[PoolLimit]) -> Acquired:
        if not pools:
            return Acquired(ok=True)
        script_keys, args = _take_arguments([old_holder, holder], pools, self._prefix)
        with self._boundary:
            refused = int(await self._swap(script_keys, args))
        return _taken(refused, pools)

    async def aclose(self) -> None:
        await self._client.aclose()


class RedisLimiter:
    """:class:`~mephisto_dist.limiter.Limiter` on one Redis server."""

    def __init__(self, client: redis.Redis, prefix: str = keys.PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._boundary = _Boundary(describe(client))
        self._acquire: Script = client.register_script(_lua("acquire.lua"))
        self._release: Script = client.register_script(_lua("release.lua"))
        self._renew: Script = client.register_script(_lua("renew.lua"))
        self._reconcile: Script = client.register_script(_lua("reconcile.lua"))
        self._state: Script = client.register_script(_lua("state.lua"))
        self._rebuild: Script = client.register_script(_lua("rebuild.lua"))
        self._refresh: Script = client.register_script(_lua("refresh.lua"))
        self._swap: Script = client.register_script(_lua("swap.lua"))

    @classmethod
    def from_url(cls, url: str, prefix: str = keys.PREFIX) -> RedisLimiter:
        return cls(connect(url), prefix)

    def acquire(self, holder: str, pools: Sequence[PoolLimit], *, exclusive: bool = False) -> Acquired:
        if not pools:
            return Acquired(ok=True)
        return self._take(self._acquire, [holder, "1" if exclusive else "0"], pools)

    def swap(self, old_holder: str, holder: str, pools: Sequence[PoolLimit]) -> Acquired:
        if not pools:
            return Acquired(ok=True)
        return self._take(self._swap, [old_holder, holder], pools)

    def _take(self, script: Script, holders: list[str], pools: Sequence[PoolLimit]) -> Acquired:
        """Run acquire.lua or swap.lua: each pool's three keys and three arguments after the holders."""
        script_keys, args = _take_arguments(holders, pools, self._prefix)
        with self._boundary:
            refused = int(script(script_keys, args))
        return _taken(refused, pools)

    def release(self, holder: str, pools: Sequence[str]) -> int:
        return sum(self.release_each([(holder, pool) for pool in pools]))

    def release_each(self, tokens: Sequence[tuple[str, str]]) -> list[bool]:
        if not tokens:
            return []
        with self._boundary:
            returned = self._release([keys.pool_key(pool, self._prefix) for _, pool in tokens],
                                     [holder for holder, _ in tokens])
        return [bool(int(flag)) for flag in returned]

    def renew(self, pool: str, holders: Collection[str], lease_s: float | None) -> int:
        check_lease(lease_s)
        if not holders:
            return 0
        with self._boundary:
            return int(self._renew([keys.pool_key(pool, self._prefix)], [_lease_arg(lease_s), *holders]))

    def held(self, pool: str) -> int:
        return len(self._live(pool))

    def holders(self, pool: str) -> set[str]:
        return self._live(pool)

    def reconcile(self, pool: str, holders: Collection[str], lease_s: float | None, *,
                  seen: Collection[str] | None = None) -> int:
        check_lease(lease_s)
        looked = ["all"] if seen is None else [str(len(seen)), *seen]
        with self._boundary:
            return int(self._reconcile([keys.pool_key(pool, self._prefix)], [_lease_arg(lease_s), *looked, *holders]))

    def rebuild(self, pool: str, holders: Collection[str], lease_s: float | None) -> int | None:
        check_lease(lease_s)
        with self._boundary:
            count = int(self._rebuild([keys.pool_key(pool, self._prefix), keys.ready_key(pool, self._prefix)],
                                      [_lease_arg(lease_s), *holders]))
        return None if count < 0 else count

    def refresh(self, pool: str, keep: Collection[str], gone: Collection[str], lease_s: float | None) -> int:
        check_lease(lease_s)
        with self._boundary:
            return int(self._refresh([keys.pool_key(pool, self._prefix), keys.ready_key(pool, self._prefix)],
                                     [_lease_arg(lease_s), len(keep), *keep, *gone]))

    def set_cap(self, pool: str, cap: int | None, *, recount: bool = False) -> None:
        check_cap(cap)
        key = keys.cap_key(pool, self._prefix)
        pipe = self._client.pipeline(transaction=True)  # one MULTI: no acquire sees the cap without the recount
        if cap is None:
            pipe.delete(key)
        else:
            pipe.set(key, cap)
        if recount:
            pipe.delete(keys.ready_key(pool, self._prefix))
        with self._boundary:
            pipe.execute()

    def get_cap(self, pool: str) -> int | None:
        with self._boundary:
            value = self._client.get(keys.cap_key(pool, self._prefix))
        return None if value is None else int(value)

    def state(self, pool: str) -> PoolState:
        with self._boundary:
            cap, held = self._state([keys.pool_key(pool, self._prefix), keys.cap_key(pool, self._prefix)], [])
        return PoolState(None if int(cap) < 0 else int(cap), int(held))

    def _live(self, pool: str) -> set[str]:
        # Reading is done without a script: TIME and the members in one MULTI, filtered here against
        # that server time (a member whose expiry is not after it has expired, as the scripts prune).
        pipe = self._client.pipeline(transaction=True)
        pipe.time()
        pipe.zrange(keys.pool_key(pool, self._prefix), 0, -1, withscores=True)
        with self._boundary:
            results: list[Any] = pipe.execute()
        (seconds, micros), members = results
        now_ms = seconds * 1000 + micros / 1000
        return {_text(holder) for holder, expiry in members if expiry > now_ms}


class RedisRateBucket:
    """:class:`~mephisto_dist.limiter.RateBucket` on one Redis server, so a provider's API rate is
    shared by every process (Celery's ``rate_limit`` is per worker)."""

    def __init__(self, client: redis.Redis, prefix: str = keys.PREFIX) -> None:
        self._prefix = prefix
        self._boundary = _Boundary(describe(client))
        self._take: Script = client.register_script(_lua("rate.lua"))

    @classmethod
    def from_url(cls, url: str, prefix: str = keys.PREFIX) -> RedisRateBucket:
        return cls(connect(url), prefix)

    def take(self, key: str, rate_per_s: float, burst: int) -> float:
        check_rate(rate_per_s, burst)
        with self._boundary:
            wait_s = self._take([keys.rate_key(key, self._prefix)], [repr(float(rate_per_s)), burst])
        return float(_text(wait_s))
