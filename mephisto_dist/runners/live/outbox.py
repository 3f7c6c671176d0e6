"""Sending a packet to an agent's page from any process: published on the agent's Redis channel, where
the web process holding the page's websocket (on any machine) hears it.

Pub/sub delivers to whoever listens at that moment; a page between two connections misses the packet.
What must not be lost (a remote call's answer) is also in the database, and every ``alive`` of a page
resends it (see :mod:`.hub`).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from mephisto_dist.limiter import keys


def send_to_agent(client: redis.Redis, agent_id: str, packet: dict[str, Any]) -> int:
    """Publish ``packet`` for ``agent_id``; return how many web processes heard it (0: not connected)."""
    return int(client.publish(keys.agent_channel(agent_id), json.dumps(packet)))
