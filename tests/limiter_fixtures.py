"""Child-process bodies and a restartable private Redis for the limiter's process tests.

Kept out of the test module so spawned children import only this, not pytest and the fixtures.
"""

from __future__ import annotations

import shutil
import subprocess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import redis

from mephisto_dist.limiter import PoolLimit
from mephisto_dist.limiter.redis_pool import RedisLimiter


def churn(
    url: str, pool: str, cap: int, index: int, attempts: int, counter_key: str,
    start: Event, results: Queue[tuple[int, int, int, int]],
) -> None:
    """Try ``attempts`` acquire/release pairs; while holding, count holders in a separate counter.

    Reports (index, successes, the highest counter value seen, releases that returned nothing).
    """
    limiter = RedisLimiter.from_url(url)
    client = redis.Redis.from_url(url)
    start.wait()
    successes = highest = bad_releases = 0
    for attempt in range(attempts):
        holder = f"unit:{index}:{attempt}"
        if not limiter.acquire(holder, [PoolLimit(pool, cap, 30.0)]).ok:
            continue
        successes += 1
        highest = max(highest, int(client.incr(counter_key)))
        client.decr(counter_key)
        if limiter.release(holder, [pool]) != 1:
            bad_releases += 1
    results.put((index, successes, highest, bad_releases))


def hold(
    url: str, pool: str, cap: int, holder: str, lease_s: float, renew_every_s: float | None,
    ready: Event, stop: Event, results: Queue[tuple[str, int]] | None = None,
) -> None:
    """Take one token and keep it (renewing every ``renew_every_s`` if given) until ``stop``, then
    give it back and report how many tokens that returned."""
    limiter = RedisLimiter.from_url(url)
    if not limiter.acquire(holder, [PoolLimit(pool, cap, lease_s)]).ok:
        raise SystemExit(f"{holder} could not acquire {pool}")
    ready.set()
    while not stop.wait(renew_every_s):
        limiter.renew(pool, [holder], lease_s)
    returned = limiter.release(holder, [pool])
    if results is not None:
        results.put((holder, returned))


class PrivateRedis:
    """A redis-server on a unix socket that a test may stop and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.binary = binary
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def pings(self) -> bool:
        client = redis.Redis.from_url(self.url)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
