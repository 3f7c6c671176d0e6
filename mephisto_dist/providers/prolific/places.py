"""Adding places to a study from many processes without losing any.

Prolific's API can only set a study's ``total_available_places`` (a PATCH of the new total); it has no
"add N" and no compare-and-set. Two launchers that both read 5 and both write 6 lose a place. Every place
increase of ours therefore reads and writes the total while holding a Redis lock per study (per Prolific
endpoint and study id), the same Redis every process of the deployment shares.

What it guarantees: while every writer of a study's places is one of ours (the launch path and beat's
study reconciler both call ``ProlificProvider.add_places``) and each finishes its read and write within
the lock's lease (``LEASE_S``, well above two calls' timeouts), the increases are applied one after
another, so the final total is the starting total plus every increase that returned. A writer that dies
holding the lock keeps the others waiting until the lease runs out (they wait up to ``WAIT_S``, then fail
the call, which the launch ledger retries). An increase whose writer died after its PATCH reached Prolific
but before it returned may have been applied: places only grow, so it is at most a spare place, as a
re-sent launch's. Nothing here protects against a person editing the study's places by hand meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis

from mephisto_dist.errors import ProviderError

LEASE_S = 120.0  # longer than a GET and a PATCH at their 30 s timeouts, with room
WAIT_S = 150.0  # a waiter outlasts one holder's whole lease
KEY_PREFIX = "mephisto-dist:prolific:places:"


class PlacesBusy(ProviderError):
    """The study's places lock was not had in time (another process held it all along)."""


class PlacesLock:
    """Per-study mutual exclusion for place increases, in Redis."""

    def __init__(self, client: redis.Redis, *, lease_s: float = LEASE_S, wait_s: float = WAIT_S) -> None:
        self.client = client
        self.lease_s = lease_s
        self.wait_s = wait_s

    @contextmanager
    def held(self, endpoint: str, study_id: str) -> Iterator[None]:
        lock = self.client.lock(f"{KEY_PREFIX}{endpoint}:{study_id}", timeout=self.lease_s, sleep=0.01,
                                blocking_timeout=self.wait_s)
        try:
            acquired = lock.acquire()
        except redis.exceptions.RedisError as error:
            raise PlacesBusy(f"study {study_id}: Redis could not be asked for its places lock: {error}") from None
        if not acquired:
            raise PlacesBusy(f"study {study_id}: its places lock was held by another process for {self.wait_s:.0f} s")
        try:
            yield
        finally:
            with suppress(redis.exceptions.LockError):  # the lease ran out: another writer may have it now
                lock.release()


_DEFAULTS: dict[str, PlacesLock] = {}
_DEFAULT_GUARD = threading.Lock()


def default_lock() -> PlacesLock:
    """The lock on the deployment's Redis, as this process's settings name it now (one per URL, made on
    first use: a process whose settings change, as a test's do, does not keep asking a Redis gone since)."""
    from mephisto_dist.settings import load_settings

    url = load_settings().effective_redis_url
    with _DEFAULT_GUARD:
        found = _DEFAULTS.get(url)
        if found is None:
            found = _DEFAULTS[url] = PlacesLock(redis.Redis.from_url(url, socket_timeout=10))
        return found
