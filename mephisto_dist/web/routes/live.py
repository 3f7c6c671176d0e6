"""The live channel's websocket (Mephisto's router protocol, see ``mephisto_dist.runners.live.protocol``): served
at ``/`` by every web process, where ``mephisto-task``'s socket handler connects."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from mephisto_dist.domain.status import AGENT_ACTIVE, AgentStatus
from mephisto_dist.errors import RequestError
from mephisto_dist.runners import channel as service
from mephisto_dist.runners.live import protocol
from mephisto_dist.runners.live.hub import LiveHub, PageSocket
from mephisto_dist.web.context import WebContext, context_of

log = logging.getLogger(__name__)

_WORKING = frozenset(status.value for status in AGENT_ACTIVE)


def hub_of(websocket: WebSocket) -> LiveHub:
    hub: LiveHub = websocket.app.state.live
    return hub


async def live_socket(websocket: WebSocket) -> None:
    context, hub = context_of(websocket), hub_of(websocket)
    await websocket.accept()
    page = PageSocket(websocket.send_text)
    agent_id: str | None = None
    try:
        while True:
            packet = protocol.parse(await websocket.receive_text())
            if packet is None:
                continue
            subject = packet.get("subject_id")
            if not isinstance(subject, str) or not subject:
                continue
            kind = packet["packet_type"]
            if kind == protocol.ALIVE:
                agent_id = await _alive(context, hub, page, subject, agent_id)
            elif kind == protocol.HEARTBEAT:
                # Only a page whose agent is still working is watched: one told it timed out or was
                # disconnected may stay open, and must not be found silent (and told) again and again.
                watched = subject == agent_id and page.status in _WORKING
                now_ms = await hub.heard(subject) if watched else None
                await page.send(protocol.heartbeat_answer(subject, page.status, now_ms=now_ms or _ms()))
            elif kind == protocol.MEPHISTO_BOUND_LIVE_UPDATE:
                if subject != agent_id:
                    # mephisto-task's send queue is ordered by the time a packet was queued, so a call made
                    # while a (re)loaded page's socket was opening arrives before the socket's alive. Like
                    # Mephisto's router, which routes a call by its subject, take it: link the socket first.
                    agent_id = await _alive(context, hub, page, subject, agent_id)
                if subject == agent_id:
                    await _live_update(context, hub, page, subject, packet.get("data"))
            elif kind == protocol.LOG_ERROR:
                log.warning("front-end error from agent %s: %s", subject, str(packet.get("data"))[:2000])
    except WebSocketDisconnect:
        pass
    finally:
        if agent_id is not None:
            await hub.detach(agent_id, page)


async def _alive(context: WebContext, hub: LiveHub, page: PageSocket, agent_id: str,
                 previous: str | None) -> str | None:
    """Link the socket to its agent, tell the page its status, and resend the answers and a hosted runner's
    messages it may have missed while it was away or not yet connected. Subscribed first, then read: a
    status the runner publishes after the subscription reaches the page through it, one before is in what
    is read (read first, a start committed and published in between was heard by no one, and the page
    waited for ever). A status the hub passed on meanwhile is newer than what was read: that read is not
    sent (and the hub does not repeat a status the page was told)."""
    await hub.attach(agent_id, page)
    told = page.told
    try:
        status = await context.call(service.agent_status, context.served, agent_id)
    except RequestError as error:
        if agent_id != previous:
            await hub.detach(agent_id, page)
        await page.send(protocol.status_packet(agent_id, "expired"))
        log.info("live channel: refused alive for %s: %s", agent_id, error)
        return previous
    if previous is not None and previous != agent_id:
        await hub.detach(previous, page)
    if page.told == told:
        page.status = status
        await page.send(protocol.status_packet(agent_id, status))
    if page.status in _WORKING:
        await hub.presence.beat(agent_id)
    for request_id, response in await context.call(service.missed_answers, context.served, agent_id):
        await page.send(protocol.answer_update(agent_id, request_id, response))
    for message in await context.call(service.missed_messages, context.served, agent_id):
        await page.send(protocol.live_update(agent_id, message))
    return agent_id


async def _live_update(context: WebContext, hub: LiveHub, page: PageSocket, agent_id: str, data: Any) -> None:
    if not isinstance(data, dict):
        return
    if page.status in _TO_RUNNER and not _is_call(data):
        run = context.served.cached_run()
        if run is not None and run.hooks.hosts_assignments:
            # A message for the agent's hosted runner from a page whose agent is known to be working (its
            # status was read at alive and has followed every change told to the page since): straight to
            # the inbox from the loop, with no thread and no database read. Others go the checked way.
            await hub.push_message(agent_id, data)
            return
    try:
        # In a thread even on SQLite: waiting for the database's write lock (held by a Celery worker, another
        # process) must not stall the loop that carries every other page's packets.
        await context.call_once_in_thread(service.live_update, context.served, agent_id, data)
    except RequestError as error:
        request_id = data.get("request_id")
        if isinstance(request_id, str):
            await page.send(protocol.answer_update(agent_id, request_id, protocol.error_response(str(error))))


_TO_RUNNER = frozenset({AgentStatus.WAITING.value, AgentStatus.IN_TASK.value, AgentStatus.ONBOARDING.value})


def _is_call(data: dict[str, Any]) -> bool:
    """A remote procedure call (recorded and answered), not a message for a runner."""
    request_id, target = data.get("request_id"), data.get("target")
    return bool(request_id) or bool(target)


def _ms() -> int:
    return int(time.time() * 1000)


ROUTES = [WebSocketRoute("/", live_socket)]
