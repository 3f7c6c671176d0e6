"""Every Redis key of heartbeats and of beat's scheduler. This docstring is the key schema.

``P`` is the prefix (default ``mephisto-dist``; the limiter's keys live under ``P:limiter``).

==========================  ======  ===========================================================  ============
key                         type    TTL                                                          owner
==========================  ======  ===========================================================  ============
``P:heartbeat:<role>``      ZSET    member = process name (a Celery worker's hostname, beat's    heartbeats
                                    ``host:pid``), score = its last heartbeat in seconds on the
                                    Redis server clock; members silent for ``FORGET_AFTER_S``
                                    are dropped by the next heartbeat. No TTL.
``P:beat:*``                mixed   celery-redbeat's schedule (``P:beat::schedule`` ZSET, one    redbeat
                                    HASH per entry, ``P:beat::statics`` SET) and its lock
                                    ``P:beat::lock`` (STRING, TTL = ``BEAT_LOCK_TIMEOUT_S``,
                                    extended by the beat holding it on every tick).
``P:lock:reconcile:<name>``  STRING  a token naming the holder; TTL = the lock's timeout. Held     reconcilers
                                    by one reconciler pass over one requester's HITs at a time
                                    (``<name>`` = ``hits:<provider type>:<requester>``).
==========================  ======  ===========================================================  ============

``<role>`` is ``worker`` or ``beat``. Scores come from the Redis server's clock (``TIME``), so machines
with skewed clocks still agree on how long ago a process was seen.
"""

from __future__ import annotations

from typing import Literal

PREFIX = "mephisto-dist"
FORGET_AFTER_S = 7 * 24 * 3600

Role = Literal["worker", "beat"]


def heartbeat_key(role: Role, prefix: str = PREFIX) -> str:
    return f"{prefix}:heartbeat:{role}"


def beat_prefix(prefix: str = PREFIX) -> str:
    """celery-redbeat's ``redbeat_key_prefix``: it appends ``:schedule``, ``:statics``, ``:lock``."""
    return f"{prefix}:beat:"


def reconcile_lock_key(name: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:lock:reconcile:{name}"
