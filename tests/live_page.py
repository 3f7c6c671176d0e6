"""A simulated live page: what ``mephisto-task``'s socket handler and remote procedure hook send over the
websocket (``alive``, heartbeats, ``mephisto_bound_live_update`` calls), on a real websocket client."""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import ExitStack
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import wait_for


class LivePage:
    def __init__(self, base_url: str, agent_id: str, *, heartbeat_s: float = 0.3) -> None:
        self.url = base_url.replace("http://", "ws://", 1) + "/"
        self.agent_id = agent_id
        self.heartbeat_s = heartbeat_s
        self.answers: dict[str, Any] = {}
        self.statuses: list[str] = []
        self.heartbeat_answers = 0
        self.update_ids: list[str] = []
        self.messages: list[dict[str, Any]] = []
        self._socket: ClientConnection | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections = ExitStack()

    def open(self, *, alive: bool = True) -> LivePage:
        """Connect and, unless told not to, send ``alive`` first (as a page that has nothing queued does)."""
        self._stop.clear()
        self._socket = self._connections.enter_context(connect(self.url, open_timeout=10))
        if alive:
            self.alive()
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._beat, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def alive(self) -> None:
        self._send({"packet_type": "alive", "subject_id": self.agent_id, "data": {}})

    def mute(self) -> None:
        """Stop the heartbeats but keep listening, as a page whose tab hangs (its socket still open)."""
        self._stop.set()

    def close(self) -> None:
        """Drop the connection, as a closed tab or a lost network does."""
        self._stop.set()
        self._connections.close()
        for thread in self._threads:
            thread.join(5)

    def _send(self, packet: dict[str, Any]) -> None:
        assert self._socket is not None
        packet.setdefault("client_timestamp", time.time())
        with self._lock:
            self._socket.send(json.dumps(packet))

    def _read(self) -> None:
        assert self._socket is not None
        try:
            for raw in self._socket:
                packet = json.loads(raw)
                kind, data = packet["packet_type"], packet.get("data") or {}
                if kind == "client_bound_live_update":
                    if data.get("update_id") in self.update_ids:
                        continue  # the page drops repeats, as mephisto-task does
                    self.update_ids.append(data.get("update_id"))
                    if "handles" in data:
                        self.answers[data["handles"]] = json.loads(data["response"])
                    else:
                        self.messages.append(data)  # from a hosted TaskRunner (observe)
                elif kind == "update_status":
                    self.statuses.append(data["status"])
                elif kind == "heartbeat":
                    self.heartbeat_answers += 1
        except ConnectionClosed:
            return

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._send({"packet_type": "heartbeat", "subject_id": self.agent_id})
            except ConnectionClosed:
                return

    def call(self, target: str, args: dict[str, Any]) -> str:
        """Send a remote call as ``makeRemoteCall`` does; return its request id."""
        request_id = str(uuid.uuid4())
        self._send({"packet_type": "mephisto_bound_live_update", "subject_id": self.agent_id,
                    "data": {"request_id": request_id, "target": target, "args": json.dumps(args),
                             "update_id": str(uuid.uuid4())}})
        return request_id

    def say(self, text: str) -> str:
        """Send a chat message as ``sendLiveUpdate`` does; return its update id."""
        update_id = str(uuid.uuid4())
        self._send({"packet_type": "mephisto_bound_live_update", "subject_id": self.agent_id,
                    "data": {"text": text, "id": self.agent_id, "update_id": update_id}})
        return update_id

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages if "text" in m]

    def answer(self, request_id: str, timeout_s: float = 20.0) -> Any:
        wait_for(lambda: request_id in self.answers, timeout_s=timeout_s, message=f"the answer to {request_id}")
        return self.answers[request_id]
