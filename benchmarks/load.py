"""Simulated workers over HTTP against any running deployment (a web process, or a balancer in front of
several): each one does what a worker's browser does with Mephisto's front end.

    python benchmarks/load.py http://127.0.0.1:3000 [--workers 100] [--units 500] [--duration 120]
                              [--think-ms 20] [--reload-ms 1000] [--upload-bytes 0] [--json out.json]

A simulated worker loops: ``POST /request_agent`` as a new worker (a refusal is asked again with the same
registration after ``--reload-ms`` on average: Mephisto's page does not ask again by itself, it shows
the refusal, so a worker who wants the task reloads the page), then loads the task's assets
(``GET /task_config.json`` and the task page named by ``init_task_data.html``), thinks for
``--think-ms``, and ``POST /submit_task`` (multipart with a file of ``--upload-bytes`` when given). It
stops when ``--units`` units were submitted by all workers together, or after ``--duration`` seconds.

Each worker holds one keep-alive HTTP/1.1 connection written by hand: about a tenth of httpx's CPU per
request, so the load generator leaves the cores to the server it measures.

Printed: units/s (submitted units over the time from the first request to the last submission), p50,
p95 and p99 per endpoint (and for the first second of load separately), refusals by reason, errors,
the most units held at once as the clients saw them (agent granted -> submit sent), how quickly a slot
freed by a submission went to a waiting worker, and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    """A request that got no usable answer: connection trouble or an HTTP error status."""


class Connection:
    """One keep-alive HTTP/1.1 connection, as a browser tab holds one. Handles Content-Length and chunked
    bodies (what uvicorn and nginx send)."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "application/json") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if method == "POST":
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        raw = head.encode() + b"\r\n" + body
        for attempt in range(2):
            reused = self.writer is not None
            try:
                async with asyncio.timeout(self.timeout_s):
                    if self.reader is None or self.writer is None:
                        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                    self.writer.write(raw)
                    status, payload, close = await self._response(self.reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
                self.close()
                quiet = isinstance(error, asyncio.IncompleteReadError) and not error.partial
                if attempt == 0 and reused and quiet:
                    continue  # the server closed an idle kept-alive connection: resend once, as browsers do
                raise HttpError(type(error).__name__) from error
            if close:
                self.close()
            return status, payload
        raise AssertionError("unreachable")

    async def json(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if body is None:
            status, payload = await self.request("GET", path)
        else:
            status, payload = await self.request("POST", path, json.dumps(body).encode())
        if status != 200:
            raise HttpError(f"HTTP {status}")
        answer: dict[str, Any] = json.loads(payload)
        return answer

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        close = headers.get("connection", "").lower() == "close"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            return status, b"".join(c[:-2] for c in chunks), close
        return status, await reader.readexactly(int(headers.get("content-length", "0"))), close

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Results:
    target_units: int
    started: float = 0.0
    latency_s: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: collections.defaultdict(list))  # endpoint -> (sent at, seconds)
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    submitted: list[str] = field(default_factory=list)  # agent ids, in order
    repeats: int = 0
    last_submit: float = 0.0
    holding: int = 0
    holding_max: int = 0
    freed_at: collections.deque[float] = field(default_factory=collections.deque)
    reoffer_s: list[float] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.submitted) >= self.target_units

    def timed(self, endpoint: str, began: float) -> None:
        self.latency_s[endpoint].append((began - self.started, time.perf_counter() - began))


class Worker:
    def __init__(self, index: int, conn: Connection, results: Results, args: argparse.Namespace,
                 deadline: float, run_tag: str) -> None:
        self.index, self.conn, self.r, self.args, self.deadline = index, conn, results, args, deadline
        self.tag = run_tag

    def over(self) -> bool:
        return self.r.done or time.perf_counter() > self.deadline

    async def loop(self) -> None:
        sequence = 0
        while not self.over():
            sequence += 1
            agent = await self.request_agent(f"load-{self.tag}-{self.index}-{sequence}", f"{self.index}.{sequence}")
            if agent is None:
                continue
            agent_id, init_data = agent
            await self.assets(init_data)
            if self.args.think_ms:
                await asyncio.sleep(self.args.think_ms / 1000 * random.uniform(0.5, 1.5))
            await self.submit(agent_id)

    async def request_agent(self, worker: str, assignment: str) -> tuple[str, dict[str, Any]] | None:
        body = {"provider_data": {"worker_name": worker, "agent_registration_id": f"{assignment}-{worker}",
                                  "assignment_id": assignment, "provider_type": "mock"},
                "client_timestamp": time.time()}
        while not self.over():
            began = time.perf_counter()
            try:
                answer = await self.conn.json("/request_agent", body)
            except HttpError as error:
                self.r.errors[f"request_agent {error}"] += 1
                await asyncio.sleep(0.05)
                continue
            self.r.timed("request_agent", began)
            data = answer.get("data", {})
            if data.get("agent_id"):
                now = time.perf_counter()
                self.r.holding += 1
                self.r.holding_max = max(self.r.holding_max, self.r.holding)
                if self.r.freed_at:
                    # Pair each freed slot, oldest first, with the next unit handed out: how long a slot
                    # stood empty (meaningful with a cap and more workers than it: someone is waiting).
                    self.r.reoffer_s.append(now - self.r.freed_at.popleft())
                return str(data["agent_id"]), dict(data.get("init_task_data") or {})
            self.r.refusals[str(data.get("failure_reason") or "refused")[:80]] += 1
            await asyncio.sleep(self.args.reload_ms / 1000 * random.uniform(0.5, 1.5))
        return None

    async def assets(self, init_data: dict[str, Any]) -> None:
        for endpoint, path in (("task_config.json", "/task_config.json"),
                               ("task page", "/" + str(init_data.get("html") or "index.html"))):
            began = time.perf_counter()
            try:
                status, _ = await self.conn.request("GET", path)
            except HttpError as error:
                self.r.errors[f"{endpoint} {error}"] += 1
                continue
            if status != 200:
                self.r.errors[f"{endpoint} HTTP {status}"] += 1
            self.r.timed(endpoint, began)

    async def submit(self, agent_id: str) -> None:
        self.r.holding -= 1
        for _attempt in range(20):  # a repeated submit is harmless: the server keeps the first answer
            began = time.perf_counter()
            try:
                status, payload = await self.post_submission(agent_id)
            except HttpError as error:
                self.r.errors[f"submit_task {error}"] += 1
                await asyncio.sleep(0.1)
                continue
            if status != 200:
                self.r.errors[f"submit_task HTTP {status}"] += 1
                await asyncio.sleep(0.1)
                continue
            self.r.timed("submit_task", began)
            answer = json.loads(payload)
            if answer.get("status") == "Already submitted":
                self.r.repeats += 1
            self.r.submitted.append(agent_id)
            self.r.last_submit = time.perf_counter()
            if self.args.cap:
                self.r.freed_at.append(self.r.last_submit)
            return
        self.r.errors["submit_task gave up"] += 1

    async def post_submission(self, agent_id: str) -> tuple[int, bytes]:
        answer = {"rating": "5", "comment": f"from {agent_id}"}
        if not self.args.upload_bytes:
            return await self.conn.request("POST", "/submit_task", json.dumps(
                {"USED_AGENT_ID": agent_id, "final_data": answer, "client_timestamp": time.time()}).encode())
        boundary = uuid.uuid4().hex
        parts = [("USED_AGENT_ID", None, agent_id.encode()),
                 ("final_string_data", None, json.dumps(answer).encode()),
                 ("evidence", f"{agent_id}.bin", agent_id.encode().ljust(self.args.upload_bytes, b"."))]
        body = b""
        for name, filename, value in parts:
            disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            kind = "\r\nContent-Type: application/octet-stream" if filename else ""
            body += f"--{boundary}\r\nContent-Disposition: {disposition}{kind}\r\n\r\n".encode() + value + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        return await self.conn.request("POST", "/submit_task", body, f"multipart/form-data; boundary={boundary}")


def percentiles_ms(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    results = Results(args.units)
    conns = [Connection(host, port) for _ in range(args.workers)]
    # Connections are opened before timing, as a worker's browser has its page loaded already.
    await asyncio.gather(*(c.request("GET", "/task_config.json") for c in conns))
    load_before = os.getloadavg()
    results.started = time.perf_counter()
    deadline = results.started + args.duration
    tag = uuid.uuid4().hex[:6]
    workers = [Worker(i, conns[i], results, args, deadline, tag) for i in range(args.workers)]
    await asyncio.gather(*(w.loop() for w in workers))
    for conn in conns:
        conn.close()
    elapsed = (results.last_submit or time.perf_counter()) - results.started
    endpoints = {}
    for endpoint, samples in sorted(results.latency_s.items()):
        endpoints[endpoint] = {**percentiles_ms([s for _, s in samples]),
                               "first_second": percentiles_ms([s for at, s in samples if at < 1.0])}
    return {
        "url": args.url, "workers": args.workers, "think_ms": args.think_ms, "reload_ms": args.reload_ms,
        "upload_bytes": args.upload_bytes,
        "units": len(results.submitted), "distinct_units": len(set(results.submitted)),
        "seconds": round(elapsed, 2), "units_per_s": round(len(results.submitted) / elapsed, 1) if elapsed else 0,
        "endpoints_ms": endpoints, "refusals": dict(results.refusals), "errors": dict(results.errors),
        "repeated_submits": results.repeats, "accepted_agents": results.submitted, "most_held_at_once": results.holding_max,
        "slot_reoffer_ms": percentiles_ms(results.reoffer_s),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def print_report(result: dict[str, Any]) -> None:
    print(f"{result['url']}: {result['workers']} workers, think {result['think_ms']} ms, "
          f"reload after a refusal {result['reload_ms']} ms -> "
          f"{result['units']} units in {result['seconds']} s = {result['units_per_s']} units/s")
    print(f"{'endpoint':<18}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}   first second: p99 (n)")
    for endpoint, p in result["endpoints_ms"].items():
        first = p["first_second"]
        print(f"{endpoint:<18}{p['n']:>7}{p['p50']!s:>9}{p['p95']!s:>9}{p['p99']!s:>9}{p['max']!s:>9}"
              f"   {first['p99']} ({first['n']})")
    reoffer = result["slot_reoffer_ms"]
    print(f"freed slot to a waiting worker: p50 {reoffer['p50']} ms, p95 {reoffer['p95']} ms (n={reoffer['n']})")
    print(f"most units held at once (client side): {result['most_held_at_once']}")
    print(f"refusals: {sum(result['refusals'].values())} {result['refusals']}")
    print(f"errors: {sum(result['errors'].values())} {result['errors']}")
    print(f"load average before {result['loadavg_before']} after {result['loadavg_after']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the run's worker-facing base URL (a web process or the balancer)")
    parser.add_argument("--workers", type=int, default=20, help="simulated workers at once")
    parser.add_argument("--units", type=int, default=500, help="stop after this many submissions")
    parser.add_argument("--duration", type=float, default=120.0, help="stop after this many seconds")
    parser.add_argument("--think-ms", type=float, default=20.0, help="mean time a worker spends on a unit")
    parser.add_argument("--reload-ms", type=float, default=1000.0,
                        help="mean time before a refused worker asks again (0.5-1.5 times it; 12.5 is the old "
                             "5-20 ms retry, far quicker than a person reloading)")
    parser.add_argument("--cap", type=int, default=0,
                        help="the run's cap, to measure how fast a freed slot is handed out again")
    parser.add_argument("--upload-bytes", type=int, default=0, help="attach a file of this size to each submit")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    result = asyncio.run(drive(args))
    print_report({k: v for k, v in result.items() if k != "accepted_agents"})
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
