"""The web process's side of the live channel: the pages' websockets it holds, fed from Redis.

Each web process keeps one pub/sub connection and subscribes to the channel of every agent whose page is
connected to it; a packet published for the agent (by a Celery worker, beat, another web process) reaches
that page whichever process it landed on. A page that reconnects elsewhere moves its subscription with it.
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

from mephisto_dist.limiter import keys
from mephisto_dist.runners.live import protocol
from mephisto_dist.runners.live.presence import AsyncPresence

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 1.0


class PageSocket:
    """One page's websocket: sends are serialised, since the reader and the handler both send."""

    def __init__(self, sender: Any) -> None:
        self._sender = sender
        self._lock = asyncio.Lock()
        self.status: str | None = None

    async def send(self, packet: dict[str, Any]) -> None:
        async with self._lock:
            await self._sender(json.dumps(packet))


class LiveHub:
    def __init__(self, redis_url: str) -> None:
        self._client = aioredis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self.presence = AsyncPresence(self._client)
        self._sockets: dict[str, PageSocket] = {}
        self._agents_by_channel: dict[str, str] = {}
        self._reader: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._started = asyncio.Lock()
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
        packet = protocol.parse(data)
        if packet is None:
            return
        if packet["packet_type"] == protocol.UPDATE_STATUS:
            socket.status = packet.get("data", {}).get("status")
        try:
            await socket.send(packet)
        except Exception:
            log.debug("live channel: could not send to a closing page", exc_info=True)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._client.aclose()
