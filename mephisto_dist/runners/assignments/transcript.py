"""The transcript's writer: one thread per runner worker process stores the lines of every runner the
process holds, many to a transaction, then does what each waited for in Redis in one pipelined round trip
(free a page's message taken from its inbox, publish a message to a page).

A runner worker holds hundreds of runners, each of which stored a line in a transaction of its own and
made its Redis calls one at a time: at 500 chats that was a commit and three round trips per line, and the
runner worker's CPU. Here a runner hands its lines over and waits until they are committed and published
(:meth:`TranscriptWriter.write` returns only then, or raises what failed), so what it may assume after a
call is what it assumed before: the line is stored, the page was sent the message. Whatever the writer has
queued when it looks is one batch (group commit): it never waits for more to come.

A batch that fails is written again one runner's lines at a time, so one runner's failure (a repeated
line, say) is only its own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import AgentMessage

log = logging.getLogger(__name__)

_INSERT_LINE = insert(AgentMessage)


class NotSent(Exception):
    """The lines were stored, but what was to follow in Redis failed (``__cause__``)."""


@dataclass
class _Batch:
    lines: Sequence[dict[str, Any]]
    freed: Sequence[str]  # Redis keys to delete once the lines are stored (inbox ``taking`` lists)
    published: Sequence[tuple[str, str]]  # (channel, payload) to publish once they are stored
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    stored: bool = False


class TranscriptWriter:
    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis) -> None:
        self._sessions = sessions
        self._client = client
        self.pid = os.getpid()
        self._queued: list[_Batch] = []
        self._wake = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name="transcript-writer", daemon=True)
        self._thread.start()

    def write(self, lines: Sequence[dict[str, Any]], *, freed: Sequence[str] = (),
              published: Sequence[tuple[str, str]] = ()) -> None:
        """Store ``lines`` (rows of ``agent_message``), then delete ``freed`` and publish ``published``;
        return once all of it is done, or raise what failed (:class:`NotSent` from it when the lines
        were stored)."""
        if not lines and not freed and not published:
            return
        batch = _Batch(lines, freed, published)
        with self._wake:
            self._queued.append(batch)
            self._wake.notify()
        batch.done.wait()
        if batch.error is not None:
            if batch.stored:
                raise NotSent("the transcript lines were stored; publishing or freeing failed") from batch.error
            raise batch.error

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queued:
                    self._wake.wait()
                batches, self._queued = self._queued, []
            try:
                self._store(batches)
            except BaseException as error:  # noqa: BLE001 - handed to every waiter, who raises it
                for batch in batches:
                    if batch.error is None and not batch.done.is_set():
                        batch.error = error
            for batch in batches:
                batch.done.set()

    def _store(self, batches: list[_Batch]) -> None:
        stored = [batch for batch in batches if batch.lines]
        try:
            self._insert([line for batch in stored for line in batch.lines])
        except Exception:
            if len(stored) <= 1:
                raise
            log.warning("transcript: a batch of %d runners' lines failed; storing each runner's alone",
                        len(stored), exc_info=True)
            for batch in stored:
                try:
                    self._insert(batch.lines)
                except Exception as error:  # noqa: BLE001 - handed to its runner, who raises it
                    batch.error = error
                else:
                    batch.stored = True
        else:
            for batch in stored:
                batch.stored = True
        ready = [batch for batch in batches if batch.error is None]
        if not ready:
            return
        pipe = self._client.pipeline(transaction=False)
        for batch in ready:
            if batch.freed:
                pipe.delete(*batch.freed)
            for channel, payload in batch.published:
                pipe.publish(channel, payload)
        try:
            pipe.execute()
        except Exception as error:  # noqa: BLE001 - handed to the runners, who raise it
            for batch in ready:
                batch.error = error

    def _insert(self, lines: Sequence[dict[str, Any]]) -> None:
        if not lines:
            return
        with transaction(self._sessions) as session:
            session.connection().execute(_INSERT_LINE, list(lines))


_WRITERS: dict[tuple[int, int], TranscriptWriter] = {}
_WRITERS_GUARD = threading.Lock()


def writer_of(sessions: sessionmaker[Session], client: redis.Redis) -> TranscriptWriter:
    """The process's writer for this database and Redis client (they live as long as the process)."""
    key = (id(sessions), id(client))
    with _WRITERS_GUARD:
        writer = _WRITERS.get(key)
        if writer is None or writer.pid != os.getpid():  # a forked child has the map, not the thread
            writer = _WRITERS[key] = TranscriptWriter(sessions, client)
        return writer
