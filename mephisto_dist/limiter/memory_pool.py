"""The limiter in memory: the same semantics as ``redis_pool`` inside one process.

For tests and single-process tools. "Now" comes from an injectable clock (seconds, monotonic), so
lease expiry and refill are tested without waiting. Every method holds one lock, so threads see each
operation as atomic, as Redis clients see a script.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Sequence

from mephisto_dist.limiter import Acquired, PoolLimit, PoolState, check_cap, check_lease, check_rate

Clock = Callable[[], float]


def _expiry(now: float, lease_s: float | None) -> float:
    return math.inf if lease_s is None else now + lease_s


class MemoryLimiter:
    """:class:`~mephisto_dist.limiter.Limiter` in one process."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pools: dict[str, dict[str, float]] = {}  # pool -> holder -> lease expiry
        self._caps: dict[str, int] = {}
        self._ready: set[str] = set()

    def lose_everything(self) -> None:
        """What a Redis flush does to the Redis implementation: every pool, cap and marker gone."""
        with self._lock:
            self._pools.clear()
            self._caps.clear()
            self._ready.clear()

    def acquire(self, holder: str, pools: Sequence[PoolLimit], *, exclusive: bool = False) -> Acquired:
        with self._lock:
            return self._acquire(holder, pools, self._clock(), exclusive=exclusive)

    def swap(self, old_holder: str, holder: str, pools: Sequence[PoolLimit]) -> Acquired:
        with self._lock:
            now = self._clock()
            lost = next((limit.pool for limit in pools if limit.rebuilt_from_db and self._lost(limit.pool, now)),
                        None)
            if lost is not None:
                return Acquired(ok=False, lost_pool=lost)
            for limit in pools:
                self._pools.get(limit.pool, {}).pop(old_holder, None)
            return self._acquire(holder, pools, now)

    def _acquire(self, holder: str, pools: Sequence[PoolLimit], now: float, *, exclusive: bool = False) -> Acquired:
        """Acquire's decision and write (the caller holds the lock)."""
        for limit in pools:
            if limit.rebuilt_from_db and self._lost(limit.pool, now):
                return Acquired(ok=False, lost_pool=limit.pool)
            members = self._pools.get(limit.pool, {}) if limit.rebuilt_from_db else self._pruned(limit.pool, now)
            if exclusive and holder in members:
                return Acquired(ok=False, held_pool=limit.pool)
            cap = self._caps.get(limit.pool, limit.cap)
            if cap > 0 and holder not in members and len(members) >= cap:
                return Acquired(ok=False, refused_pool=limit.pool)
        for limit in pools:
            self._pools.setdefault(limit.pool, {})[holder] = _expiry(now, limit.lease_s)
        return Acquired(ok=True)

    def release(self, holder: str, pools: Sequence[str]) -> int:
        return sum(self.release_each([(holder, pool) for pool in pools]))

    def release_each(self, tokens: Sequence[tuple[str, str]]) -> list[bool]:
        with self._lock:
            now = self._clock()
            expiries = [self._pools.get(pool, {}).pop(holder, None) for holder, pool in tokens]
            return [expiry is not None and expiry > now for expiry in expiries]

    def renew(self, pool: str, holders: Collection[str], lease_s: float | None) -> int:
        check_lease(lease_s)
        with self._lock:
            now = self._clock()
            members = self._pruned(pool, now)
            renewed = [holder for holder in set(holders) if holder in members]
            for holder in renewed:
                members[holder] = _expiry(now, lease_s)
            return len(renewed)

    def held(self, pool: str) -> int:
        with self._lock:
            return len(self._live(pool, self._clock()))

    def holders(self, pool: str) -> set[str]:
        with self._lock:
            return set(self._live(pool, self._clock()))

    def reconcile(self, pool: str, holders: Collection[str], lease_s: float | None, *,
                  seen: Collection[str] | None = None) -> int:
        check_lease(lease_s)
        with self._lock:
            now = self._clock()
            expiry = _expiry(now, lease_s)
            looked = set(seen or ())
            present = set(self._pools.get(pool, {}))
            kept = {} if seen is None else {
                holder: until for holder, until in self._pruned(pool, now).items() if holder not in looked}
            # A holder the caller saw is renewed, never added back: missing now, it gave its token back since.
            self._pools[pool] = {**kept, **dict.fromkeys(
                (h for h in holders if h not in looked or h in present), expiry)}
            return len(self._pools[pool])

    def rebuild(self, pool: str, holders: Collection[str], lease_s: float | None) -> int | None:
        check_lease(lease_s)
        with self._lock:
            if pool in self._ready:
                return None
            self._ready.add(pool)
            self._pools[pool] = dict.fromkeys(holders, _expiry(self._clock(), lease_s))
            return len(self._pools[pool])

    def refresh(self, pool: str, keep: Collection[str], gone: Collection[str], lease_s: float | None) -> int:
        check_lease(lease_s)
        with self._lock:
            now = self._clock()
            members = self._pools.get(pool, {})
            for holder in keep:  # renewed before lapsed leases are pruned: a holder that counts keeps it
                if holder in members:
                    members[holder] = _expiry(now, lease_s)
            for holder in gone:
                members.pop(holder, None)
            return len(self._pruned(pool, now))

    def set_cap(self, pool: str, cap: int | None, *, recount: bool = False) -> None:
        check_cap(cap)
        with self._lock:
            if cap is None:
                self._caps.pop(pool, None)
            else:
                self._caps[pool] = cap
            if recount:
                self._ready.discard(pool)

    def get_cap(self, pool: str) -> int | None:
        with self._lock:
            return self._caps.get(pool)

    def state(self, pool: str) -> PoolState:
        with self._lock:
            return PoolState(self._caps.get(pool), len(self._live(pool, self._clock())))

    def _lost(self, pool: str, now: float) -> bool:
        """Whether a pool rebuilt from the database must be recounted: never built, lost, or one of its
        leases ran out (its unit may still count); the last makes it lost (the caller holds the lock)."""
        if pool in self._ready and any(expiry <= now for expiry in self._pools.get(pool, {}).values()):
            self._ready.discard(pool)
        return pool not in self._ready

    def _live(self, pool: str, now: float) -> dict[str, float]:
        """The members whose lease has not run out, read without pruning (as Redis reads do)."""
        return {holder: expiry for holder, expiry in self._pools.get(pool, {}).items() if expiry > now}

    def _pruned(self, pool: str, now: float) -> dict[str, float]:
        """The pool's members without expired leases (the caller holds the lock). A pool never
        written to reads as empty without being stored."""
        members = self._pools.get(pool)
        if members is None:
            return {}
        expired = [holder for holder, expiry in members.items() if expiry <= now]
        for holder in expired:
            del members[holder]
        return members


class MemoryRateBucket:
    """:class:`~mephisto_dist.limiter.RateBucket` in one process."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time of last refill)

    def take(self, key: str, rate_per_s: float, burst: int) -> float:
        check_rate(rate_per_s, burst)
        with self._lock:
            now = self._clock()
            tokens, refilled_at = self._buckets.get(key, (float(burst), now))
            # A clock stepping back must not mint or destroy tokens.
            if now > refilled_at:
                tokens = min(float(burst), tokens + (now - refilled_at) * rate_per_s)
                refilled_at = now
            # The epsilon absorbs float error after waiting exactly the advertised time.
            if tokens >= 1 - 1e-9:
                self._buckets[key] = (max(0.0, tokens - 1), refilled_at)
                return 0.0
            self._buckets[key] = (tokens, refilled_at)
            return (1 - tokens) / rate_per_s
