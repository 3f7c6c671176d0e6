"""The lease of a running assignment (``L:assignment:<id>:runner``, see ``limiter.keys``): set by the runner
worker before the assignment starts, renewed by a thread while ``run_assignment`` runs, and left as
``ended:<unix time>`` once it returned (its agents may still be ``in task``, submitting from their pages,
until the run's ``submission_timeout`` from that time). A key missing while agents of the assignment are
``in task`` means the process hosting it died (SIGKILL, a lost machine): the live sweep ends the assignment
(``runners.assignments.recovery``), as it times out the agents that did not submit in time, or, when the
run allows restarts, claims the key (``restarting:<n>``, :func:`claim_restart`) for the runner worker that
restarts it, which swaps the claim for its own lease (:func:`take_restart`): one restart per claim."""

from __future__ import annotations

import functools
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from mephisto_dist.limiter import keys

RUNNER_LEASE_S = 3.0
"""How long a runner's lease outlives its last renewal (renewed every third of it)."""
RUNNING = "running"
ENDED = "ended"
RESTARTING = "restarting"
ENDED_TTL_S = 24 * 60 * 60
RESTART_CLAIM_LEASES = 4
"""A restart's claim holds the lease key this many lease times for the new runner to take it; a claim no
runner worker took lapses, and the next sweep claims the next restart (bounded by ``runner_restarts``)."""
RESTARTS_TTL_S = 24 * 60 * 60


class RunnerLease:
    def __init__(self, client: redis.Redis, assignment_id: int, lease_s: float = RUNNER_LEASE_S) -> None:
        self._client = client
        self._key = keys.assignment_runner_lease(assignment_id)
        self._lease_ms = max(1, int(lease_s * 1000))

    def __enter__(self) -> Self:
        self._client.set(self._key, RUNNING, px=self._lease_ms)
        _renewer(self._client).hold(self._key, self._lease_ms)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        _renewer(self._client).drop(self._key)  # no renewal of it is under way once this returns
        self._client.set(self._key, ended_value(datetime.now(UTC)), ex=ENDED_TTL_S)


class _Renewer:
    """Renews every lease a process holds on one Redis client, from one thread, in one pipelined round
    trip a third of a lease apart. A runner worker holds hundreds of waiting runners: a thread and a round
    trip per lease per second was a tenth of its CPU at a hundred chats."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()  # held while a renewal is under way: drop() waits it out
        self._changed = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name="runner-leases", daemon=True)
        self._thread.start()

    def hold(self, key: str, lease_ms: int) -> None:
        with self._lock:
            self._held[key] = lease_ms
        with self._changed:
            self._changed.notify()

    def drop(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                held = dict(self._held)
            if not held:
                with self._changed:
                    self._changed.wait(1.0)
                continue
            time.sleep(min(held.values()) / 3000)
            with self._lock:
                if not self._held:
                    continue
                pipe = self._client.pipeline(transaction=False)
                for key, lease_ms in self._held.items():
                    pipe.set(key, RUNNING, px=lease_ms)
                try:
                    pipe.execute()
                except redis.RedisError:
                    continue  # retried; a lease that lapses meanwhile ends the assignment, as a dead process would


_RENEWERS: dict[int, _Renewer] = {}
_RENEWERS_GUARD = threading.Lock()


def _renewer(client: redis.Redis) -> _Renewer:
    with _RENEWERS_GUARD:
        found = _RENEWERS.get(id(client))
        if found is None or found._client is not client:
            found = _RENEWERS[id(client)] = _Renewer(client)
        return found


def ended_value(at: datetime) -> str:
    return f"{ENDED}:{at.timestamp():.3f}"


def ended_at(value: bytes | str | None) -> datetime | None:
    """When the runner whose lease holds ``value`` returned; None while it runs, when the key is missing, or
    for an ``ended`` written without its time."""
    text = value.decode() if isinstance(value, bytes) else value
    if text is None or not text.startswith(f"{ENDED}:"):
        return None
    try:
        return datetime.fromtimestamp(float(text.split(":", 1)[1]), UTC)
    except ValueError:
        return None


def claim_restart(client: redis.Redis, assignment_id: int, *, lease_s: float = RUNNER_LEASE_S) -> str | None:
    """The live sweep's claim to restart a lost runner: the lease key, still missing, set to
    ``restarting:<n>`` (n: this is the assignment's n-th restart); the claim, or None when another sweep
    (or a runner) holds the key. The caller gives up a claim past its run's limit."""
    claim = f"{RESTARTING}:pending"
    if not client.set(keys.assignment_runner_lease(assignment_id), claim, nx=True,
                      px=max(1, int(lease_s * RESTART_CLAIM_LEASES * 1000))):
        return None
    count = int(client.incr(keys.assignment_runner_restarts(assignment_id)))
    client.expire(keys.assignment_runner_restarts(assignment_id), RESTARTS_TTL_S)
    value = f"{RESTARTING}:{count}"
    client.set(keys.assignment_runner_lease(assignment_id), value, xx=True,
               px=max(1, int(lease_s * RESTART_CLAIM_LEASES * 1000)))
    return value


def restart_number(claim: str) -> int:
    return int(claim.split(":", 1)[1])


def give_up_restart(client: redis.Redis, assignment_id: int, claim: str) -> None:
    """A claim past the limit: the key goes back to missing, as the assignment ends."""
    _swap(client, assignment_id, claim, None)


def take_restart(client: redis.Redis, assignment_id: int, claim: str, *, lease_s: float = RUNNER_LEASE_S) -> bool:
    """The new runner takes the lease the sweep's ``claim`` holds; False when it is no longer that claim (a
    repeated delivery, a claim that lapsed)."""
    return _swap(client, assignment_id, claim, RUNNING, px=max(1, int(lease_s * 1000)))


@functools.cache
def _swap_lua() -> str:
    return Path(__file__).with_name("swap.lua").read_text(encoding="utf-8")


def _swap(client: redis.Redis, assignment_id: int, old: str, new: str | None, *, px: int = 1) -> bool:
    swap = client.register_script(_swap_lua())
    return bool(swap(keys=[keys.assignment_runner_lease(assignment_id)], args=[old, new or "", px]))
