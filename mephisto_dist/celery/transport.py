"""The worker's Redis transport: kombu's, with a channel whose connection was let go of saying so as a
connection error, which Celery and kombu know how to live with, rather than as an AttributeError, which
stops the worker.

When a worker loses the broker, Celery 5.7.0 collects the connection (kombu closes the channel and lets
go of the transport's client) and then closes it once more. Two things then reach for a Redis client of
the old channel, and kombu builds it from the client that is gone:
- the second close, when the first stopped half-way (the consumer was waiting on BRPOP, and reading that
  wait failed) and a task was unacknowledged: it tries to put the task back;
- the acknowledgement of a task received before the loss and finished after it.
Either raised AttributeError and the worker exited ("Unrecoverable error"), leaving a deployment without
the worker its beat and runs wait for until someone restarts it. Raised as a connection error instead,
the close is ignored as a failed close is, and the acknowledgement is logged as not delivered ("Couldn't
ack"): the task stays in the broker's unacknowledged set and comes back after the visibility timeout, to
handlers that are idempotent, as after any worker's death."""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("this channel's broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel


def use_for_redis_urls() -> None:
    """``redis://``, ``rediss://`` and ``redis+socket://`` brokers of this process use this transport
    (before its first connection: kombu caches a transport class once it resolved the name)."""
    for name in ("redis", "rediss"):
        TRANSPORT_ALIASES[name] = f"{__name__}:Transport"
