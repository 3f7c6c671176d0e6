"""What a restarted runner replays (:func:`~.host.restart_assignment`): each agent's stored transcript
(``agent_message``), so a runner started again on another worker after its first one died goes through
the conversation so far without the pages seeing it again, then carries on live.

The runner is run from its start with the same agents. For each agent, in the stored order:

- ``act()`` returns the stored messages that came from the page (``in``), one per call, without waiting;
- ``observe()`` of a message already sent (``out``) is not sent to the page again;
- what the runner kept in the agent's state (``state``: a world's ``SUBMIT_WORLD_DATA``) is not stored again.

Once an agent's stored messages are used up, its ``act()`` waits on its inbox (where what the page said
while no runner ran is waiting) and its ``observe()`` reaches its page. Stored messages are matched by
their order, not their content: a runner that says something else the second time through (a bot with
no fixed seed) goes on from what it says now, and the pages keep what they were sent the first time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

IN = "in"
"""A transcript's direction: from the page, as the runner took it."""
OUT = "out"
"""Sent to the page."""
STATE = "state"
"""What the runner kept in the agent's state without sending it (a world's ``SUBMIT_WORLD_DATA``)."""


@dataclass
class _Stored:
    said: deque[dict[str, Any]] = field(default_factory=deque)
    said_ids: set[str] = field(default_factory=set)
    sent: int = 0
    kept: int = 0
    taking: bool = False


class Replay:
    def __init__(self, transcript: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        """``transcript``: (agent id, direction, data) in each agent's stored order."""
        self._agents: dict[str, _Stored] = {}
        for agent_id, direction, data in transcript:
            stored = self._agents.setdefault(agent_id, _Stored())
            if direction == IN:
                stored.said.append(dict(data))
                if isinstance(data.get("update_id"), str):
                    stored.said_ids.add(str(data["update_id"]))
            elif direction == OUT:
                stored.sent += 1
            elif direction == STATE:
                stored.kept += 1

    def said_update_ids(self, agent_id: str) -> frozenset[str]:
        """The ``update_id`` of every stored message from the agent's page."""
        stored = self._agents.get(agent_id)
        return frozenset() if stored is None else frozenset(stored.said_ids)

    def next_said(self, agent_id: str) -> dict[str, Any] | None:
        """The page's next stored message, for ``act()``; None once they are used up."""
        stored = self._agents.get(agent_id)
        if stored is None or not stored.said:
            return None
        stored.taking = True
        return stored.said.popleft()

    def taken(self, agent_id: str) -> bool:
        """Whether the message ``act()`` just took was a stored one (so it is not stored again)."""
        stored = self._agents.get(agent_id)
        if stored is None or not stored.taking:
            return False
        stored.taking = False
        return True

    def already_sent(self, agent_id: str) -> bool:
        """Whether this ``observe()`` was sent to the page before the restart (and counts it off)."""
        stored = self._agents.get(agent_id)
        if stored is None or stored.sent <= 0:
            return False
        stored.sent -= 1
        return True

    def already_kept(self, agent_id: str) -> bool:
        stored = self._agents.get(agent_id)
        if stored is None or stored.kept <= 0:
            return False
        stored.kept -= 1
        return True

    def replaying(self) -> bool:
        return any(s.said or s.sent or s.kept for s in self._agents.values())
