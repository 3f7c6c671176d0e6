"""The lease of a running assignment (``L:assignment:<id>:runner``, see ``limiter.keys``): set by the runner
worker before the assignment starts, renewed by a thread while ``run_assignment`` runs, and left as
``ended:<unix time>`` once it returned (its agents may still be ``in task``, submitting from their pages,
until the run's ``submission_timeout`` from that time). A key missing while agents of the assignment are
``in task`` means the process hosting it died (SIGKILL, a lost machine): the live sweep ends the assignment
(``runners.assignments.recovery``), as it times out the agents that did not submit in time, or, when the
run allows restarts, claims the key (``restarting:<n>``, :func:`claim_restart`) for the runner worker that
restarts it, which swaps the claim for its own lease (:meth:`RunnerLease.take`): one restart per claim.

**Fencing.** A lease is ``running:<token>``, the token its holder's own, and the key is the one arbiter of
who owns the assignment: the sweep claims it (``SET NX``) before it ends a lost assignment (``lost:<time>``,
:func:`claim_end`) or restarts one (``restarting:<n>``), and a runner renews it, and ends it, only while it
still holds its value (compare-and-set), or sets it again while it is missing (Redis lost it; nobody
claimed it, so nobody took over). The runner checks the lease before each thing it does (a page's message
taken, a line sent or stored, a status moved): within a lease time of its last renewal it is its own (the
key cannot have lapsed yet); past that it asks Redis. A runner paused past its lease (SIGSTOP, a frozen VM,
a partitioned machine) whose assignment the sweep ended or restarted elsewhere therefore finds, once it
runs again, that the key is no longer its own: :class:`LeaseLost` is raised before it takes a message,
writes a line, moves a unit or ends the lease, and it stops without touching what the sweep or the new
runner own."""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.commands.core import Script

from mephisto_dist.limiter import keys

log = logging.getLogger(__name__)

RUNNER_LEASE_S = 3.0
"""How long a runner's lease outlives its last renewal (renewed every third of it)."""
RUNNING = "running"
ENDED = "ended"
RESTARTING = "restarting"
LOST = "lost"
ENDED_TTL_S = 24 * 60 * 60
RESTART_CLAIM_LEASES = 4
"""A restart's claim holds the lease key this many lease times for the new runner to take it; a claim no
runner worker took lapses, and the next sweep claims the next restart (bounded by ``runner_restarts``)."""
RESTARTS_TTL_S = 24 * 60 * 60


class LeaseLost(Exception):
    """This runner's lease is no longer its own: it lapsed (the process was paused past it) and the live sweep
    ended or restarted the assignment. Raised before the runner touches anything the assignment's new owner
    holds."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: this runner's lease lapsed and is no longer its own")
        self.what = what


class RunnerLease:
    """An assignment's lease held by one runner (``running:<token>``); see the module's "Fencing"."""

    def __init__(self, client: redis.Redis, assignment_id: int, lease_s: float = RUNNER_LEASE_S, *,
                 key: str | None = None, what: str | None = None) -> None:
        self._client = client
        self.key = key or keys.assignment_runner_lease(assignment_id)
        self.what = what or f"assignment {assignment_id}"
        self.value = f"{RUNNING}:{uuid.uuid4().hex}"
        self.lease_ms = max(1, int(lease_s * 1000))
        self._taken = False
        self._lost = False
        self._valid_until = 0.0  # monotonic: the key is surely still ours before this

    @classmethod
    def of_onboarding(cls, client: redis.Redis, agent_id: str, lease_s: float = RUNNER_LEASE_S) -> RunnerLease:
        """The lease of the runner playing an onboarding agent's world."""
        return cls(client, 0, lease_s, key=keys.onboarding_runner_lease(agent_id), what=f"onboarding {agent_id}")

    def claim(self) -> bool:
        """Take the lease only if its key is missing (``SET NX``): False when another runner holds it, or
        the sweep claimed it (``lost``)."""
        started = time.monotonic()
        self._taken = bool(self._client.set(self.key, self.value, nx=True, px=self.lease_ms))
        if self._taken:
            self.renewed(started)
        return self._taken

    def take(self, claim: str) -> bool:
        """A restart: the lease the sweep's ``claim`` holds becomes this runner's; False when the key holds
        something else (a repeated delivery, a claim that lapsed)."""
        started = time.monotonic()
        self._taken = _swap(self._client, self.key, claim, self.value, px=self.lease_ms)
        if self._taken:
            self.renewed(started)
        return self._taken

    def __enter__(self) -> Self:
        if not self._taken:
            started = time.monotonic()
            self._client.set(self.key, self.value, px=self.lease_ms)
            self.renewed(started)
        _renewer(self._client).hold(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        _renewer(self._client).drop(self)  # no renewal of it is under way once this returns
        if not self._lost:
            _swap(self._client, self.key, self.value, ended_value(datetime.now(UTC)), px=ENDED_TTL_S * 1000)

    @property
    def lost(self) -> bool:
        return self._lost

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` (monotonic) succeeded: the key is ours for a lease time from then."""
        self._valid_until = max(self._valid_until, sent_at + self.lease_ms / 1000)

    def mark_lost(self) -> None:
        self._lost = True

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still this runner's: free within a lease time of the
        last renewal, a read of the key past it (the renewals stopped: the process was paused)."""
        if self._lost:
            raise LeaseLost(self.what)
        if time.monotonic() < self._valid_until:
            return
        started = time.monotonic()
        if _renew_script(self._client)(keys=[self.key], args=[self.value, self.lease_ms]) in (1, 2):
            self.renewed(started)
            return
        self._lost = True
        log.warning("%s: the runner's lease lapsed and is no longer its own", self.what)
        raise LeaseLost(self.what)


class _Renewer:
    """Renews every lease a process holds on one Redis client, from one thread, in one pipelined round
    trip a third of a lease apart. A runner worker holds hundreds of waiting runners: a thread and a round
    trip per lease per second was a tenth of its CPU at a hundred chats. Each renewal is a compare-and-set:
    a lease whose key holds another value now is marked lost, never written."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._held: dict[str, RunnerLease] = {}
        self._lock = threading.Lock()  # held while a renewal is under way: drop() waits it out
        self._changed = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name="runner-leases", daemon=True)
        self._thread.start()

    def hold(self, lease: RunnerLease) -> None:
        with self._lock:
            self._held[lease.value] = lease
        with self._changed:
            self._changed.notify()

    def drop(self, lease: RunnerLease) -> None:
        with self._lock:
            self._held.pop(lease.value, None)

    def _run(self) -> None:
        renew = _renew_script(self._client)
        while True:
            with self._lock:
                held = list(self._held.values())
            if not held:
                with self._changed:
                    self._changed.wait(1.0)
                continue
            time.sleep(min(lease.lease_ms for lease in held) / 3000)
            with self._lock:
                leases = [lease for lease in self._held.values() if not lease.lost]
                if not leases:
                    continue
                pipe = self._client.pipeline(transaction=False)
                for lease in leases:
                    renew(keys=[lease.key], args=[lease.value, lease.lease_ms], client=pipe)
                sent_at = time.monotonic()
                try:
                    answers = pipe.execute()
                except redis.RedisError:
                    continue  # retried; a lease that lapses meanwhile ends the assignment, as a dead process would
                for lease, answer in zip(leases, answers, strict=True):
                    if answer in (1, 2):
                        lease.renewed(sent_at)
                    else:
                        lease.mark_lost()
                        log.warning("%s: the runner's lease lapsed and is no longer its own", lease.what)


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


def give_up_restart(client: redis.Redis, assignment_id: int, claim: str) -> str | None:
    """A claim past the limit: the sweep's claim becomes its claim to end the assignment (``lost``, returned;
    None when the key no longer held the claim)."""
    value = _lost_value()
    swapped = _swap(client, keys.assignment_runner_lease(assignment_id), claim, value, px=ENDED_TTL_S * 1000)
    return value if swapped else None


def claim_end(client: redis.Redis, assignment_id: int, held: bytes | str | None, *, key: str | None = None) -> bool:
    """The sweep's claim to end a lost assignment, taken before it ends it: the missing key set to
    ``lost:<time>`` (a runner that comes back finds its lease gone for good). ``held``: the value the
    sweep read. True when the sweep may end it: it claimed the key, or an earlier sweep had (its ending
    did not finish); False when the key is someone's now (a runner set it again)."""
    if is_lost(held):
        return True
    return bool(client.set(key or keys.assignment_runner_lease(assignment_id), _lost_value(), nx=True, ex=ENDED_TTL_S))


def is_lost(value: bytes | str | None) -> bool:
    """Whether a lease key's value is the sweep's claim to end its assignment."""
    text = value.decode() if isinstance(value, bytes) else value
    return text is not None and text.startswith(f"{LOST}:")


def _lost_value() -> str:
    return f"{LOST}:{time.time():.3f}"


def is_running(value: bytes | str | None) -> bool:
    """Whether a lease key's value says a runner holds it now."""
    text = value.decode() if isinstance(value, bytes) else value
    return text is not None and (text == RUNNING or text.startswith(f"{RUNNING}:"))


@functools.cache
def _lua(name: str) -> str:
    return Path(__file__).with_name(name).read_text(encoding="utf-8")


def _renew_script(client: redis.Redis) -> Script:
    return client.register_script(_lua("renew_lease.lua"))


def _swap(client: redis.Redis, key: str, old: str, new: str | None, *, px: int = 1) -> bool:
    swap = client.register_script(_lua("swap.lua"))
    return bool(swap(keys=[key], args=[old, new or "", px]))
