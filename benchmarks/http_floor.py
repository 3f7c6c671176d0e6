"""The web process's cost per request with no work behind it: a one-route ASGI app answering a small JSON
body, served by uvicorn as ``web.recorded_server.server_config`` serves the worker-facing app, driven by
``--clients`` keep-alive connections (``load.py``'s hand-written HTTP/1.1 client) in another process.

    python benchmarks/http_floor.py [--requests 20000] [--clients 20] [--protocol one-write|httptools]
                                    [--rounds 3]

``one-write`` is the server's protocol (``web.one_write``: an answer's head and body in one ``write``);
``httptools`` is uvicorn's own, which writes each separately. Each round runs both, alternating, so a
machine's drift falls on both. Printed per round and protocol: the server's CPU per request (user +
system, from ``/proc``), its ``write`` system calls per request (``/proc/<pid>/io``), requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from matrix import free_port, wait

BODY = json.dumps({"agent_id": "0" * 36, "failure_reason": None, "init_task_data": {"html": "page.html"}}).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(BODY)).encode()), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


def serve(port: int, protocol: str) -> None:
    import uvicorn

    from mephisto_dist.web.recorded_server import server_config

    config = server_config(app, "127.0.0.1", port)
    if protocol == "httptools":
        config.http = "httptools"
    uvicorn.Server(config).run()


def cpu_and_writes(pid: int) -> tuple[float, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return ticks / os.sysconf("SC_CLK_TCK"), int(io["syscw"])


async def drive(port: int, requests: int, clients: int) -> float:
    from load import Connection

    left = requests
    body = json.dumps({"provider_data": {"worker_name": "w"}}).encode()

    async def client() -> None:
        nonlocal left
        conn = Connection("127.0.0.1", port)
        while left > 0:
            left -= 1
            status, _ = await conn.request("POST", "/request_agent", body)
            assert status == 200, status
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def measure(protocol: str, requests: int, clients: int) -> dict[str, float]:
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port, protocol), daemon=True)
    server.start()
    assert server.pid is not None
    wait(lambda: listening(port), 20, "the server to listen")
    asyncio.run(drive(port, 500, clients))  # warm-up
    cpu0, writes0 = cpu_and_writes(server.pid)
    wall = asyncio.run(drive(port, requests, clients))
    cpu1, writes1 = cpu_and_writes(server.pid)
    server.terminate()
    server.join()
    return {"cpu_us": 1e6 * (cpu1 - cpu0) / requests, "writes": (writes1 - writes0) / requests,
            "per_s": requests / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocol", choices=["one-write", "httptools"], action="append")
    args = parser.parse_args()
    for round_ in range(1, args.rounds + 1):
        for protocol in args.protocol or ["httptools", "one-write"]:
            got = measure(protocol, args.requests, args.clients)
            print(f"round {round_} {protocol:9s}: {got['cpu_us']:6.1f} us of server CPU a request, "
                  f"{got['writes']:.2f} writes a request, {got['per_s']:7.0f} requests/s", flush=True)


if __name__ == "__main__":
    main()
