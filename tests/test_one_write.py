"""``web.one_write``: the worker-facing server sends an answer's head and body in one ``write`` (counted by
the kernel: ``/proc/<pid>/io``'s ``syscw``), and what it holds still reaches the client whole and in
order: a streamed body, an answer on a connection the client asked to close."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.system import free_port

pytestmark = pytest.mark.system

SERVER = textwrap.dedent("""
    import sys
    import uvicorn
    from mephisto_dist.web.recorded_server import server_config

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b'{"ok":true}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    config = server_config(app, "127.0.0.1", int(sys.argv[1]))
    if sys.argv[2] == "httptools":
        config.http = "httptools"
    uvicorn.Server(config).run()
""")


@pytest.fixture(params=["one-write", "httptools"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int, str]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port), request.param])
    try:
        wait_for(lambda: _listening(port), timeout_s=20, message="the server to listen")
        yield f"http://127.0.0.1:{port}", process.pid, request.param
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def writes(pid: int) -> int:
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(io["syscw"])


def test_an_answer_is_one_write(server: tuple[str, int, str]) -> None:
    url, pid, protocol = server
    with httpx.Client(base_url=url) as client:  # one keep-alive connection
        assert client.get("/").json() == {"ok": True}
        before = writes(pid)
        for _ in range(200):
            answer = client.post("/request_agent", json={})
            assert answer.status_code == 200 and answer.json() == {"ok": True}
        per_request = (writes(pid) - before) / 200
    # uvicorn's own protocol, the figure this one halves: the head, then the body.
    assert per_request < 1.2 if protocol == "one-write" else per_request >= 2.0


def test_a_streamed_body_and_a_closing_connection_get_everything(server: tuple[str, int, str]) -> None:
    url, _, _ = server
    with httpx.Client(base_url=url) as client:
        streamed = client.get("/stream")
        assert streamed.status_code == 200 and streamed.content == b"one,two,three"
        closing = client.get("/", headers={"Connection": "close"})
        assert closing.json() == {"ok": True} and closing.headers.get("connection") == "close"
