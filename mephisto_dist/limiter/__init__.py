"""Concurrency limits as leased token pools, and a shared rate bucket: the contract.

This package owns the limits of DESIGN.md ("Limits"): ``max_num_concurrent_units``,
``allowed_concurrent`` and ``maximum_units_per_worker`` are each a *pool*, a named set of tokens with
a cap, and crowd-provider API calls share a token *bucket*.

A pool's tokens are identified by their holder (in practice a unit id such as ``"unit:42"``). A token
is leased: unless it is renewed it returns to the pool when its lease runs out, so a process that dies
holding tokens leaks nothing for longer than the lease. A pool acquired with ``lease_s=None`` keeps its
members for good (a worker's units ever taken in a task). Cap 0 means unlimited; holders are recorded
all the same so :meth:`Limiter.held` counts them. The cap is passed on every call (the caller reads it
from the database), but a cap stored with :meth:`Limiter.set_cap` wins, so a live run's cap can be
changed from the CLI. Lowering a cap below current usage takes nothing away; it refuses new holders
until usage falls below the new cap.

The database is the source of truth. A pool acquired with ``rebuilt_from_db=True`` refuses every
acquire once it is *lost* (Redis restarted or was flushed: its ready marker is gone) until someone
rebuilds it from the database with :meth:`Limiter.rebuild`; a pool that was never built counts as lost,
so its first user builds it. In such a pool a lease that ran out is not a slot given back (its unit may
still count: beat, which renews the leases, was down): the acquire that finds one marks the pool lost,
and only the recount (a rebuild, or :meth:`Limiter.refresh`, which renews the holders that count before
it prunes) frees it. :meth:`Limiter.refresh` is the reconciler's write: it renews the holders the
database says still count and removes only those it proved gone, so a token taken after the caller's
snapshot is never dropped. Take tokens before the database write that makes them count and give them
back after the write that ends them, so a recount never sees more holders than the pool.
:meth:`Limiter.reconcile` replaces a pool's contents outright (the per-worker pools' repair).

Implementations, named by technology: ``redis_pool.RedisLimiter`` / ``redis_pool.RedisRateBucket``
(shared by every process; the Redis server's clock decides expiry) and ``memory_pool.MemoryLimiter`` /
``memory_pool.MemoryRateBucket`` (one process; injectable clock). Redis keys are built in ``keys``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PoolLimit:
    """One pool to take a token in: its name, the caller's cap (0 = unlimited) and the lease length
    (``None`` = the token never expires)."""

    pool: str
    cap: int
    lease_s: float | None
    rebuilt_from_db: bool = False

    def __post_init__(self) -> None:
        if self.cap < 0:
            raise ValueError(f"pool {self.pool!r}: cap must not be negative, got {self.cap}")
        check_lease(self.lease_s)


@dataclass(frozen=True, slots=True)
class Acquired:
    """The outcome of :meth:`Limiter.acquire`: either every token was taken (``ok``), or none was and
    ``refused_pool`` names the first full pool, or ``lost_pool`` the first pool to rebuild first, or
    (an exclusive acquire) ``held_pool`` the first pool where the holder already has a token."""

    ok: bool
    refused_pool: str | None = None
    lost_pool: str | None = None
    held_pool: str | None = None


@dataclass(frozen=True, slots=True)
class PoolState:
    """What :meth:`Limiter.state` reads: the stored cap override (``None``: none) and live tokens."""

    cap_override: int | None
    held: int


class Limiter(Protocol):
    """Leased token pools shared by everyone using the same implementation instance (or Redis)."""

    def acquire(self, holder: str, pools: Sequence[PoolLimit], *, exclusive: bool = False) -> Acquired:
        """Take a token for ``holder`` in every pool, or in none. A holder already in a pool keeps its
        token, is not counted twice and gets a fresh lease; ``exclusive``: it is refused instead
        (``held_pool``), so two callers using one holder name cannot both believe they own its token."""
        ...

    def release(self, holder: str, pools: Sequence[str]) -> int:
        """Give back ``holder``'s tokens; returns how many it actually held. Idempotent."""
        ...

    def release_each(self, tokens: Sequence[tuple[str, str]]) -> list[bool]:
        """Give back each ``(holder, pool)`` token, all in one step (one round trip); returns, for each,
        whether its holder actually held it. Idempotent."""
        ...

    def swap(self, old_holder: str, holder: str, pools: Sequence[PoolLimit]) -> Acquired:
        """Give back ``old_holder``'s tokens in these pools and take one for ``holder``, as one step: the
        slot freed is never seen free by anyone else. The release stands even when the acquire is
        refused (a cap lowered meanwhile); a lost pool refuses both (nothing is written)."""
        ...

    def renew(self, pool: str, holders: Collection[str], lease_s: float | None) -> int:
        """Give a fresh lease to those of ``holders`` that still hold a token; returns how many."""
        ...

    def held(self, pool: str) -> int:
        """How many live tokens the pool has."""
        ...

    def holders(self, pool: str) -> set[str]:
        """Who holds the pool's live tokens."""
        ...

    def reconcile(self, pool: str, holders: Collection[str], lease_s: float | None, *,
                  seen: Collection[str] | None = None) -> int:
        """Atomically give ``holders`` fresh leases and drop the others; returns the count.

        ``seen``: the holders the caller read before the recount. Only those of them missing from
        ``holders`` are dropped, so a token acquired after the caller looked survives (a launch racing
        the recount); and those of them in ``holders`` are renewed, never added back, so a token given
        back after the recount's snapshot stays given back. Without it the pool becomes exactly
        ``holders``.
        """
        ...

    def rebuild(self, pool: str, holders: Collection[str], lease_s: float | None) -> int | None:
        """If the pool is lost, atomically make it exactly ``holders`` (fresh leases) and mark it ready;
        returns the count. A pool someone else rebuilt meanwhile is left alone: returns ``None``."""
        ...

    def refresh(self, pool: str, keep: Collection[str], gone: Collection[str], lease_s: float | None) -> int:
        """Renew those of ``keep`` still holding a token (none is added) and remove ``gone``; every other
        token is left as it is. Returns the live count."""
        ...

    def set_cap(self, pool: str, cap: int | None, *, recount: bool = False) -> None:
        """Store a cap that overrides the one callers pass (``None`` removes the override).

        ``recount``: in the same step, mark the pool lost, so every acquire in a pool
        ``rebuilt_from_db`` refuses until it is rebuilt from the database. A pool nobody kept while its
        run was uncapped is counted afresh before the cap applies again."""
        ...

    def get_cap(self, pool: str) -> int | None:
        """The stored cap override, if any."""
        ...

    def state(self, pool: str) -> PoolState:
        """The stored cap override and the live token count, read together (one round trip)."""
        ...


class RateBucket(Protocol):
    """Token buckets shared by everyone using the same implementation instance (or Redis)."""

    def take(self, key: str, rate_per_s: float, burst: int) -> float:
        """Take one token from bucket ``key`` (refilled at ``rate_per_s``, holding at most ``burst``).

        Returns 0.0 when a token was taken, else the seconds to wait before trying again (nothing is
        taken then).
        """
        ...


def check_lease(lease_s: float | None) -> None:
    if lease_s is not None and not (lease_s > 0 and math.isfinite(lease_s)):
        raise ValueError(f"a lease must be a positive number of seconds or None, got {lease_s!r}")


def check_cap(cap: int | None) -> None:
    if cap is not None and cap < 0:
        raise ValueError(f"a cap must not be negative, got {cap}")


def check_rate(rate_per_s: float, burst: int) -> None:
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"a rate must be a positive number per second, got {rate_per_s!r}")
    if burst < 1:
        raise ValueError(f"a burst must be at least 1, got {burst}")
