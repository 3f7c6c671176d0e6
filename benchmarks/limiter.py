"""Benchmark the Redis limiter: acquire+release pairs per second and the latency of a pair.

    python benchmarks/limiter.py [--redis-url URL] [--seconds N] [--tcp] [--cap 50] [--clients 1,8]
                                 [--floor]

Without ``--redis-url`` a private redis-server is started in a temporary directory, on a unix socket
(or with ``--tcp`` on a free TCP port on 127.0.0.1). Each client is a separate process taking tokens
for distinct holders in one pool; with the default cap of 50 and at most 8 clients no acquire is
refused, so the figures measure the scripts and the round trips, not contention.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import redis

from mephisto_dist.limiter import Acquired, PoolLimit
from mephisto_dist.limiter.redis_pool import RedisLimiter, connect

POOL = "benchmark:units"
WARM_UP_PAIRS = 200


@dataclass(frozen=True)
class ClientReport:
    pairs: int
    refused: int
    elapsed_s: float
    latencies_ns: bytes  # array('q') of pair latencies


class Pairs(Protocol):
    def acquire(self, holder: str, pools: Sequence[PoolLimit]) -> Acquired: ...

    def release(self, holder: str, pools: Sequence[str]) -> int: ...


class PingFloor:
    """A PING in place of each call: what the client library and the round trips alone cost."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def acquire(self, holder: str, pools: Sequence[PoolLimit]) -> Acquired:
        self._client.ping()
        return Acquired(ok=True)

    def release(self, holder: str, pools: Sequence[str]) -> int:
        self._client.ping()
        return 1


def run_client(url: str, index: int, cap: int, seconds: float, floor: bool, ready: Queue[int],
               start: Event, reports: Queue[ClientReport]) -> None:
    limiter: Pairs = PingFloor(connect(url)) if floor else RedisLimiter.from_url(url)
    for n in range(WARM_UP_PAIRS):  # loads the scripts and opens the connection
        limiter.acquire(f"warm:{index}:{n}", [PoolLimit(POOL, 0, 60.0)])
        limiter.release(f"warm:{index}:{n}", [POOL])
    limits = [PoolLimit(POOL, cap, 60.0)]
    latencies = array("q")
    refused = pairs = 0
    clock = time.perf_counter_ns
    ready.put(index)
    start.wait()
    began = clock()
    deadline = began + int(seconds * 1e9)
    now = began
    while now < deadline:
        holder = f"unit:{index}:{pairs}"
        if not limiter.acquire(holder, limits).ok:
            refused += 1
        limiter.release(holder, [POOL])
        pairs += 1
        finished = clock()
        latencies.append(finished - now)
        now = finished
    reports.put(ClientReport(pairs, refused, (now - began) / 1e9, latencies.tobytes()))


def measure(url: str, clients: int, cap: int, seconds: float, floor: bool = False,
            ) -> tuple[float, float, float, int]:
    """(pairs per second, p50 ms, p99 ms, refusals) with ``clients`` processes."""
    context = get_context("spawn")
    start = context.Event()
    ready: Queue[int] = context.Queue()
    reports: Queue[ClientReport] = context.Queue()
    processes = [
        context.Process(target=run_client, args=(url, index, cap, seconds, floor, ready, start, reports))
        for index in range(clients)
    ]
    for process in processes:
        process.start()
    for _ in processes:  # every client imported and warmed up before the clock starts
        ready.get(timeout=60)
    start.set()
    results = [reports.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join(30)
    latencies = array("q")
    for result in results:
        latencies.frombytes(result.latencies_ns)
    ordered = sorted(latencies)
    pairs_per_s = sum(result.pairs / result.elapsed_s for result in results)

    def percentile(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6

    return pairs_per_s, percentile(0.50), percentile(0.99), sum(result.refused for result in results)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def private_redis(tcp: bool) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH; pass --redis-url")
    with tempfile.TemporaryDirectory(prefix="mdist-bench-") as directory:
        if tcp:
            port = free_port()
            listen = ["--port", str(port), "--bind", "127.0.0.1"]
            url = f"redis://127.0.0.1:{port}/0"
        else:
            path = Path(directory) / "redis.sock"
            listen = ["--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700"]
            url = f"unix://{path}"
        server = subprocess.Popen(
            [binary, *listen, "--save", "", "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            client.close()
            yield url
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="an existing Redis (default: start a private one)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per row")
    parser.add_argument("--tcp", action="store_true", help="private Redis on TCP instead of a unix socket")
    parser.add_argument("--cap", type=int, default=50)
    parser.add_argument("--clients", default="1,8", help="comma-separated client process counts")
    parser.add_argument("--floor", action="store_true",
                        help="add a row of PING pairs: the floor set by the client and the round trips")
    args = parser.parse_args()

    with (private_redis(args.tcp) if args.redis_url is None else _given(args.redis_url)) as url:
        hiredis = "yes" if redis.utils.HIREDIS_AVAILABLE else "no"
        print(f"redis {url}  cap {args.cap}  {args.seconds:g} s per row  hiredis {hiredis}")
        print(f"{'row':<16}  {'pairs/s':>9}  {'p50 ms':>7}  {'p99 ms':>7}  {'refused':>7}")
        rows = [(f"{n} client(s)", n, False) for n in (int(part) for part in args.clients.split(","))]
        if args.floor:
            rows.append(("1 client, 2 PING", 1, True))
        for label, clients, floor in rows:
            pairs_per_s, p50_ms, p99_ms, refused = measure(url, clients, args.cap, args.seconds, floor)
            print(f"{label:<16}  {pairs_per_s:>9,.0f}  {p50_ms:>7.3f}  {p99_ms:>7.3f}  {refused:>7}")


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
