"""Which live pages are still there: each heartbeat is stamped in Redis (by whichever web process got
it), and the live sweep takes the agents silent for longer than ``live_disconnect_s``.

Only agents whose page has spoken on the live channel are watched, as Mephisto's router only watched
agents that had pinged it: a static task's page, which never opens a websocket, is never disconnected.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import cast

import redis
import redis.asyncio as aioredis

from mephisto_dist.limiter import keys

STALE_BATCH = 500


@functools.cache
def _lua(name: str) -> str:
    return Path(__file__).with_name(name).read_text(encoding="utf-8")


class AsyncPresence:
    """The web process's side: stamp a heartbeat."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._beat = client.register_script(_lua("heartbeat.lua"))
        self._key = keys.live_heartbeats_key()

    async def beat(self, agent_id: str) -> int:
        """Stamp ``agent_id`` as heard now; return the server time in ms."""
        return int(await self._beat(keys=[self._key], args=[agent_id]))

    async def beat_all(self, agent_ids: list[str]) -> int:
        """Stamp every one of ``agent_ids`` as heard now, in one call; return the server time in ms."""
        return int(await self._beat(keys=[self._key], args=agent_ids))


class Presence:
    """The sweep's side: take the silent agents."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._stale = client.register_script(_lua("stale.lua"))
        self._beat = client.register_script(_lua("heartbeat.lua"))
        self._key = keys.live_heartbeats_key()

    def beat(self, agent_id: str) -> int:
        return int(self._beat(keys=[self._key], args=[agent_id]))

    def take_silent(self, silence_s: float) -> list[str]:
        """Agents not heard for ``silence_s``, removed from the watch list as they are returned."""
        found = self._stale(keys=[self._key], args=[int(silence_s * 1000), STALE_BATCH])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in found]

    def forget(self, agent_id: str) -> bool:
        """Stop watching an agent (its unit was submitted, or it ended otherwise); True for the one caller
        that removed it, so two sweeps never both act on it."""
        return bool(self._client.zrem(self._key, agent_id))

    def watched(self) -> dict[str, int]:
        pairs = cast(list[tuple[bytes, float]], self._client.zrange(self._key, 0, -1, withscores=True))
        return {member.decode(): int(score) for member, score in pairs}
