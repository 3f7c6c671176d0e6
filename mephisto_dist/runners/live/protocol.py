"""The packets of Mephisto's live protocol, as ``mephisto-task`` (2.x) speaks it to the router.

A page opens a websocket on the task's own host and port (path ``/``) and sends JSON packets
``{packet_type, subject_id, data, client_timestamp}`` where ``subject_id`` is its agent id:

- ``alive`` (``data`` empty) on every (re)connection: it names the agent behind the socket. The router
  answers an ``update_status`` packet with the agent's status. It is not always first: the page's send
  queue is ordered by the time a packet was queued, and ``alive`` is queued once the socket opened, so a
  call made while it was opening goes out before it (the router routes packets by their subject).
- ``heartbeat`` every 6 s; the router answers ``heartbeat`` with ``data.last_mephisto_ping`` (ms since the
  epoch of the backend's last sign of life; a page that sees it more than 20 s old gives up) and
  ``data.status``.
- ``mephisto_bound_live_update`` with the page's message in ``data`` (``update_id`` set by the page).
  A remote procedure call is ``{request_id, target, args}``, ``args`` a JSON text.

The backend sends ``client_bound_live_update`` (``data`` with an ``update_id`` the page uses to drop
repeats; a remote procedure answer is ``{handles: request_id, response: JSON text}``) and
``update_status`` (``data.status``, e.g. ``disconnect`` or ``timeout``).
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

ALIVE: Final = "alive"
HEARTBEAT: Final = "heartbeat"
UPDATE_STATUS: Final = "update_status"
CLIENT_BOUND_LIVE_UPDATE: Final = "client_bound_live_update"
MEPHISTO_BOUND_LIVE_UPDATE: Final = "mephisto_bound_live_update"
LOG_ERROR: Final = "log_error"

SYSTEM_SUBJECT: Final = "mephisto"


def _packet(packet_type: str, subject_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"packet_type": packet_type, "subject_id": subject_id, "data": data,
            "router_outgoing_timestamp": time.time()}


def status_packet(agent_id: str, status: str) -> dict[str, Any]:
    return _packet(UPDATE_STATUS, agent_id, {"status": status})


def heartbeat_answer(agent_id: str, status: str | None, *, now_ms: int) -> dict[str, Any]:
    # The backend answering at all is its sign of life: every web process talks to it directly.
    return _packet(HEARTBEAT, agent_id, {"last_mephisto_ping": now_ms, "status": status})


def live_update(agent_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return _packet(CLIENT_BOUND_LIVE_UPDATE, agent_id, data)


def answer_update(agent_id: str, request_id: str, response_json: str) -> dict[str, Any]:
    """The answer to remote call ``request_id``; its ``update_id`` is fixed so a resent answer is dropped
    by the page rather than handled twice."""
    return live_update(agent_id, {"handles": request_id, "response": response_json,
                                  "update_id": f"{request_id}:answer"})


def error_response(message: str) -> str:
    """The ``response`` text of a call that failed: the page's remote procedure resolves with it."""
    return json.dumps({"error": message})


def parse(text: str | bytes) -> dict[str, Any] | None:
    """A packet from a page, or ``None`` for anything that is not a JSON object with a packet type."""
    try:
        packet = json.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(packet, dict) or not isinstance(packet.get("packet_type"), str):
        return None
    return packet
