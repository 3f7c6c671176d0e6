"""A hosted runner's agent's inbox (``L:agent:<id>:inbox``, see ``limiter.keys``): any web process pushes
its page's messages, and the sweep the status changes that end it; the runner worker waits on it
(``BLMOVE`` to the agent's ``taking`` list, kept there until the runner stored it) in ``act(timeout)``.
A message the page sends again (same ``update_id``, as mephisto-task resends after a reconnect) is pushed
once."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from mephisto_dist.limiter import keys

INBOX_TTL_S = 24 * 60 * 60
ACT = "act"
STATUS = "status"
SHUTDOWN = "shutdown"
SUBMIT = "submit"


@functools.cache
def _lua() -> str:
    return Path(__file__).with_name("inbox.lua").read_text(encoding="utf-8")


class Inbox:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._push = client.register_script(_lua())

    def push_message(self, agent_id: str, data: Mapping[str, Any]) -> bool:
        """A page's message; False for a repeat of one already pushed."""
        update_id = data.get("update_id")
        return self._entry(agent_id, {"kind": ACT, "data": dict(data)},
                           update_id if isinstance(update_id, str) else "")

    def push_status(self, agent_id: str, status: str) -> None:
        self._entry(agent_id, {"kind": STATUS, "status": status}, "")

    def push_submit(self, agent_id: str, data: Mapping[str, Any]) -> None:
        """The page submitted (an onboarding page, whose runner waits for it: ``await_submit``)."""
        self._entry(agent_id, {"kind": SUBMIT, "data": dict(data)}, "")

    def push_shutdown(self, agent_id: str) -> None:
        self._entry(agent_id, {"kind": SHUTDOWN}, "")

    def take(self, agent_id: str, wait_s: float) -> dict[str, Any] | None:
        """The agent's next entry, waiting up to ``wait_s`` (0: not at all); None when there is none. The
        entry moves to the agent's ``taking`` list, where it stays until :meth:`taken` (the runner stored
        it), so a runner that dies in between does not lose it (:meth:`give_back`). The list has no
        expiry of its own (one more round trip per message): the runner empties it, a restarted runner
        gives it back, and the sweep drops it with the inbox of an assignment it ends."""
        inbox, taking = keys.agent_inbox(agent_id), keys.agent_inbox_taking(agent_id)
        raw: Any
        if wait_s <= 0:
            raw = self._client.lmove(inbox, taking, "LEFT", "RIGHT")
        else:
            raw = self._client.blmove(inbox, taking, wait_s, "LEFT", "RIGHT")  # type: ignore[arg-type]  # seconds, decimal since Redis 6
        if raw is None:
            return None
        entry: dict[str, Any] = json.loads(raw)
        return entry

    def taken(self, agent_id: str) -> None:
        """The entries taken are dealt with (a page's message is in the transcript)."""
        self._client.delete(keys.agent_inbox_taking(agent_id))

    def give_back(self, agent_id: str, stored_update_ids: frozenset[str]) -> int:
        """Entries taken by a runner that died before it stored them, back to the front of the inbox in
        their order (a page's message it stored, known by its ``update_id``, is dropped); how many."""
        inbox, taking = keys.agent_inbox(agent_id), keys.agent_inbox_taking(agent_id)
        back = 0
        while (found := self._client.rpop(taking)) is not None:
            raw: Any = found
            entry = json.loads(raw)
            if entry.get("kind") == ACT and (entry.get("data") or {}).get("update_id") in stored_update_ids:
                continue
            self._client.lpush(inbox, raw)
            back += 1
        if back:
            self._client.expire(inbox, INBOX_TTL_S)
        return back

    def drop(self, agent_id: str) -> None:
        self._client.delete(keys.agent_inbox(agent_id), keys.agent_seen_updates(agent_id),
                            keys.agent_inbox_taking(agent_id))

    def _entry(self, agent_id: str, entry: dict[str, Any], update_id: str) -> bool:
        return bool(self._push(keys=[keys.agent_seen_updates(agent_id), keys.agent_inbox(agent_id)],
                               args=[update_id, json.dumps(entry), INBOX_TTL_S]))


class AsyncInbox:
    """A web process's side, on its event loop: a page's message pushed without a thread."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._push = client.register_script(_lua())

    async def push_message(self, agent_id: str, data: Mapping[str, Any]) -> bool:
        """As :meth:`Inbox.push_message`."""
        update_id = data.get("update_id")
        entry = json.dumps({"kind": ACT, "data": dict(data)})
        return bool(await self._push(keys=[keys.agent_seen_updates(agent_id), keys.agent_inbox(agent_id)],
                                     args=[update_id if isinstance(update_id, str) else "", entry, INBOX_TTL_S]))
