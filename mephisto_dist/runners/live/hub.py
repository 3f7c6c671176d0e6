"""The web process's side of the live channel: the pages' websockets it holds, fed from Redis.

Each web process keeps one pub/sub connection and subscribes to the channel of every agent whose page is
connected to it; a packet published for the agent (by a Celery worker, beat, another web process) reaches
that page whichever process it landed on. A page that reconnects elsewhere moves its subscription with it.
A packet is passed on as it was published (only a status change is read, for the page's status).

The pages' heartbeats are stamped in Redis together, every ``BEAT_EVERY_S``, in one call: a heartbeat
from each of a thousand pages every few seconds was a Redis round trip each. A page is found silent
after ``live_disconnect_s`` (15 s), which the delay does not come near. The answer's
``last_mephisto_ping`` is the Redis server's time at the last stamping that succeeded, so a web process
cut off from Redis stops vouching for the backend, and its pages give up as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from typing import Any

import redis.asyncio as aioredis

from mephisto_dist.domain.status import AGENT_ACTIVE
from mephisto_dist.limiter import keys
from mephisto_dist.runners.live import protocol
from mephisto_dist.runners.live.inbox import AsyncInbox
from mephisto_dist.runners.live.presence import AsyncPresence

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 64
_WORKING = frozenset(status.value for status in AGENT_ACTIVE)
BEAT_EVERY_S = 0.2


class PageSocket:
    """One page's websocket: sends are serialised, since the reader and the handler both send."""

    def __init__(self, sender: Any) -> None:
        self._sender = sender
        self._lock = asyncio.Lock()
        self.status: str | None = None
        self.told = 0
        """How many status changes the hub has passed on to this page (``web.routes.live``'s alive compares
        it before and after its own read of the status, to send nothing older than what the page heard)."""

    async def send(self, packet: dict[str, Any]) -> None:
        await self.send_text(json.dumps(packet))

    async def send_text(self, text: str) -> None:
        async with self._lock:
            await self._sender(text)


class LiveHub:
    def __init__(self, redis_url: str) -> None:
        # Every page's heartbeat stamp and message push is a command in flight: they wait for one of a
        # bounded set of connections rather than fail (redis-py's async pool refuses past its 100).
        self._client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=MAX_CONNECTIONS, timeout=None))
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self.presence = AsyncPresence(self._client)
        self._inbox = AsyncInbox(self._client)
        self._sockets: dict[str, PageSocket] = {}
        self._agents_by_channel: dict[str, str] = {}
        self._reader: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._started = asyncio.Lock()
        self._beats: set[str] = set()
        self._beater: asyncio.Task[None] | None = None
        self._heard_ms = 0  # the Redis server's time at the last stamping that succeeded
        # Subscribed from the start, so the pub/sub connection always has a channel to listen on.
        self._own_channel = f"{keys.LIVE_PREFIX}:web:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def _ensure_started(self) -> None:
        async with self._started:
            if self._reader is None:
                await self._pubsub.subscribe(self._own_channel)
                self._reader = asyncio.create_task(self._read(), name="live-hub-reader")

    async def attach(self, agent_id: str, socket: PageSocket) -> None:
        """Route the agent's packets to ``socket`` (replacing an older socket of the same page)."""
        await self._ensure_started()
        known = agent_id in self._sockets
        self._sockets[agent_id] = socket
        if not known:
            channel = keys.agent_channel(agent_id)
            self._agents_by_channel[channel] = agent_id
            await self._pubsub.subscribe(channel)

    async def detach(self, agent_id: str, socket: PageSocket) -> None:
        if self._sockets.get(agent_id) is not socket:
            return  # the page already reconnected on a newer socket
        del self._sockets[agent_id]
        channel = keys.agent_channel(agent_id)
        self._agents_by_channel.pop(channel, None)
        with contextlib.suppress(aioredis.RedisError):
            await self._pubsub.unsubscribe(channel)

    async def heard(self, agent_id: str) -> int:
        """A heartbeat of the agent's page, stamped with the next batch; the Redis server's time (ms) at
        the last stamping that succeeded (the first one is made now)."""
        self._beats.add(agent_id)
        if self._beater is None:
            self._beater = asyncio.create_task(self._stamp_beats(), name="live-hub-heartbeats")
        if not self._heard_ms:
            self._heard_ms = await self.presence.beat(agent_id)
        return self._heard_ms

    async def _stamp_beats(self) -> None:
        while True:
            await asyncio.sleep(BEAT_EVERY_S)
            if not self._beats:
                continue
            beats, self._beats = self._beats, set()
            # Only pages still connected here and still working: one told since that its agent ended (and
            # taken off the watch list by whoever told it) must not be put back on it.
            beats = {agent_id for agent_id in beats
                     if (socket := self._sockets.get(agent_id)) is not None and socket.status in _WORKING}
            if not beats:
                continue
            try:
                self._heard_ms = await self.presence.beat_all(sorted(beats))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("live channel: stamping %d heartbeats in Redis failed; retrying", len(beats),
                            exc_info=True)
                self._beats |= beats

    async def push_message(self, agent_id: str, data: dict[str, Any]) -> bool:
        """A page's message for its hosted runner, pushed to the agent's inbox from the event loop (see
        :class:`~.inbox.Inbox`); False for a repeat."""
        return await self._inbox.push_message(agent_id, data)

    @property
    def connected(self) -> int:
        return len(self._sockets)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live channel: reading Redis pub/sub failed; retrying")
                await asyncio.sleep(READ_TIMEOUT_S)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
            agent_id = self._agents_by_channel.get(channel)
            socket = self._sockets.get(agent_id) if agent_id is not None else None
            if socket is None:
                continue
            # Each delivery in its own task: a page with a slow connection must not hold up the others'.
            # The page's send lock is fair, so its packets still go out in the order they came.
            delivery = asyncio.create_task(self._deliver(socket, message["data"]))
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._deliveries.discard)

    async def _deliver(self, socket: PageSocket, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        if protocol.UPDATE_STATUS in text:  # only a status change is read: the page's status follows it
            packet = protocol.parse(text)
            if packet is None:
                return
            if packet["packet_type"] == protocol.UPDATE_STATUS:
                status = (packet.get("data") or {}).get("status")
                if status == socket.status:
                    return  # the page knows it already (told at its alive, read after subscribing)
                socket.status = status
                socket.told += 1
        try:
            await socket.send_text(text)
        except Exception:
            log.debug("live channel: could not send to a closing page", exc_info=True)

    async def close(self) -> None:
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._beater
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._client.aclose()
