"""Benchmark the whole system the way a researcher would compare it with Mephisto: units per second,
worker-facing latency, time to the first claimable unit, and the concurrency cap seen from outside.

    python benchmarks/throughput.py [--units N] [--clients C] [--cap K] [--json out.json]
                                    [--timeout S] [--database-url URL] [--redis-url URL]
                                    [--client raw|httpx] [--think-ms MS] [--py-spy out.txt] [--keep]

``--py-spy`` samples the web process's threads holding the GIL (``py-spy --gil``): where its CPU goes, not
where it waits on Redis or the database.

A task folder (static_task blueprint, local architect on a free port, mock provider, a CSV of N rows,
``max_num_concurrent_units`` = K) is written to a temporary directory and ``mephisto-dist run`` is
started on it as a subprocess with its own ``MEPHISTO_DIST_DATA_DIR`` (embedded Redis and SQLite unless
``--redis-url`` / ``--database-url`` are given; a PostgreSQL URL gets a fresh database that is dropped at
the end, and a shared Redis should be given its own db number, e.g. ``redis://127.0.0.1:6379/9``).

C simulated workers (asyncio tasks in this process) each loop: ``POST /request_agent`` with a new worker
-> ``POST /submit_task`` with the agent, retrying a refusal after 5-20 ms with the same registration,
until all N units are submitted or the deadline passes. Each worker holds one keep-alive HTTP/1.1
connection written by hand (``--client raw``, the default: ~0.1 ms of CPU a request) or they share one
pooled httpx.AsyncClient (``--client httpx``: ~4-5 ms a request on this machine, enough to starve the
server of CPU). The load generator shares the machine's cores with the server, so its CPU time is
reported next to the wall time, with the CPU time of every server process, the time each spent
waiting for a CPU, and the CPU used by unrelated processes meanwhile (other people's test runs).

Units in flight are counted from request_agent's answer to submit_task's answer, which can overcount
by one or two while a freed slot is refilled before the submit's answer arrives; ``--think-ms`` makes
the strict count (answer -> submit sent) meaningful, and the run's progress lines give the server's
own launched+assigned count.

Reference (Mephisto 1.1.1): ~5 units/s capped at 50, 60-75 units/s uncapped, request_agent p99
0.5-1.8 s, first unit claimable 8 s after launch. Targets: >= 300 units/s capped or not, p99 < 100 ms
for request_agent and submit_task, first unit claimable < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

REFUSAL_PAUSE_S = (0.005, 0.020)
PROBE_INTERVAL_S = 0.020
DRAIN_GRACE_S = 3.0  # after the first Ctrl-C, which drains
STOP_GRACE_S = 20.0  # after the second Ctrl-C, which forces; then SIGKILL
CLEANUP_RESERVE_S = DRAIN_GRACE_S + STOP_GRACE_S + 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TASK_HTML = """<p>Rate this sentence: <b>${sentence}</b></p>
<select name="rating"><option>1</option><option>5</option></select>
<textarea name="comment"></textarea>
"""
CONFIG_YAML = """# @package _global_
defaults:
  - /mephisto/blueprint: static_task
  - /mephisto/architect: local
  - /mephisto/provider: mock
  - _self_

mephisto:
  blueprint:
    data_csv: ${{task_dir}}/data.csv
    task_source: ${{task_dir}}/server_files/task.html
    preview_source: ${{task_dir}}/server_files/task.html
    units_per_assignment: 1
  architect:
    port: {port}
  task:
    task_name: {task_name}
    task_title: "Throughput benchmark"
    task_description: "Rate a sentence."
    task_reward: 0.01
    task_tags: "benchmark"
    max_num_concurrent_units: {cap}
"""


# ---------------------------------------------------------------------------------------------------
# The system under test: a task folder, the run process, its process tree.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_task_folder(root: Path, units: int, cap: int, port: int) -> str:
    """Write the task folder; return its task name (unique, so runs never share a Task)."""
    task_name = f"throughput-bench-{uuid.uuid4().hex[:8]}"
    (root / "server_files").mkdir(parents=True)
    (root / "server_files" / "task.html").write_text(TASK_HTML)
    (root / "hydra_configs" / "conf").mkdir(parents=True)
    (root / "hydra_configs" / "conf" / "example.yaml").write_text(
        CONFIG_YAML.format(port=port, task_name=task_name, cap=cap))
    with open(root / "data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence_id", "sentence", "source"])
        for index in range(units):
            writer.writerow([f"s{index}", f"Sentence number {index} sits on the mat.", "benchmark"])
    return task_name


@dataclass(frozen=True)
class ProcessId:
    """A pid plus its start time, so a recycled pid is never signalled by mistake."""

    pid: int
    started: int
    name: str = field(compare=False)


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may contain spaces; fields after it are plain.
    close = raw.rindex(")")
    return [raw[raw.index("(") + 1:close], *raw[close + 2:].split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_tree(root_pid: int) -> list[ProcessId]:
    """The root and every descendant, from /proc."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children[int(stat[2])].append(int(entry.name))
    found: list[ProcessId] = []
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        stat = _stat(pid)
        if stat is None:
            continue
        found.append(ProcessId(pid, int(stat[20]), role_of(stat[0], _cmdline(pid))))
        pending.extend(children.get(pid, []))
    return found


def role_of(comm: str, cmdline: str) -> str:
    # The web server and the Redis keeper that run forks keep its command line, under names of their own.
    named = {"mephisto-web": "web", "mephisto-keeper": "redis keeper"}
    if comm in named:
        return named[comm]
    for marker, role in (("nginx", "nginx"), ("postgres: ", "postgresql"), ("bin/postgres ", "postgresql"),
                         # (first: "nginx: worker process" is no Celery worker)
                         (" web ", "web"), (" mephisto_dist.web ", "web"), ("redis-server", "redis"), (" beat ", "beat"),
                         (" worker ", "celery worker"), (" run ", "run (cli)"), ("py-spy", "py-spy")):
        if marker in f" {cmdline} ":
            return role
    return cmdline.split(" ")[0].rsplit("/", 1)[-1] or "exited"


def alive(process: ProcessId) -> bool:
    stat = _stat(process.pid)
    return stat is not None and int(stat[20]) == process.started and stat[1] != "Z"


def cpu_seconds(process: ProcessId) -> float:
    stat = _stat(process.pid)
    if stat is None or int(stat[20]) != process.started:
        return 0.0
    return (int(stat[12]) + int(stat[13])) / CLOCK_TICKS  # utime + stime


def runnable_wait_s(pid: int) -> float:
    """Seconds the process's live threads spent runnable but waiting for a CPU (schedstat's 2nd field):
    high when other processes crowd the cores."""
    total_ns = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        with suppress(OSError, IndexError, ValueError):
            total_ns += int((task / "schedstat").read_text().split()[1])
    return total_ns / 1e9


class RunProcess:
    """``mephisto-dist run`` as a subprocess, stopped like a user would (Ctrl-C), then forcibly."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the process's lifetime
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(list(argv), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.known: dict[int, ProcessId] = {}

    def snapshot(self) -> list[ProcessId]:
        """The run's live process tree, remembered so that orphans can be stopped later."""
        tree = process_tree(self.process.pid) if self.process.poll() is None else []
        for item in tree:
            self.known[item.pid] = item
        return tree

    def find(self, role: str) -> ProcessId | None:
        return next((p for p in self.snapshot() if p.name == role), None)

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, finished: bool) -> None:
        """Let a finished run exit by itself; else Ctrl-C it (which drains: it waits for units in
        flight, which these clients have abandoned), then Ctrl-C again (which forces); SIGKILL what
        still runs after the grace period, leftover children included."""
        if self._log.closed:
            return  # stopped already
        self.snapshot()
        waits: list[tuple[signal.Signals | None, float]] = [(None, STOP_GRACE_S)] if finished else []
        waits += [(signal.SIGINT, DRAIN_GRACE_S), (signal.SIGINT, STOP_GRACE_S)]
        for signum, grace_s in waits:
            if self.process.poll() is not None:
                break
            if signum is not None:
                self.process.send_signal(signum)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        if self.process.poll() is None:
            print(f"run process {self.process.pid} did not stop on Ctrl-C twice: SIGKILL", file=sys.stderr)
            self.process.kill()
            self.process.wait(5)
        leftovers = [p for p in self.known.values() if p.pid != self.process.pid and alive(p)]
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for item in leftovers:
                if alive(item):
                    print(f"stopping leftover {item.name} process {item.pid}", file=sys.stderr)
                    os.kill(item.pid, signum)
            deadline = time.monotonic() + 5
            while any(alive(p) for p in leftovers) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._log.close()


@contextmanager
def fresh_postgres(url: str) -> Iterator[str]:
    """A new database on the server of ``url``, dropped afterwards, so concurrent users never collide."""
    import psycopg

    parts = urlsplit(url)
    name = f"mdist_bench_{uuid.uuid4().hex[:10]}"
    admin = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------------
# The simulated workers.


@dataclass
class Measurements:
    units: int
    cap: int
    request_ok_s: list[float] = field(default_factory=list)
    request_refused_s: list[float] = field(default_factory=list)
    submit_ok_s: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    completed: int = 0
    completion_times: list[float] = field(default_factory=list)
    # Units in flight as the clients see them: from request_agent's answer to submit_task's answer.
    # The server's assigned interval ends inside that window (at the submit's commit), so a refill
    # racing the submit's answer can overcount by a few; the run's own progress lines are the
    # server-side check (see server_max_open_units).
    in_flight: int = 0
    in_flight_max: int = 0
    # From the agent's arrival to the submit being sent: certainly inside the server's assigned
    # interval, so exceeding the cap here proves a violation (needs --think-ms to be non-trivial).
    holding: int = 0
    holding_max: int = 0
    freed_at: collections.deque[float] = field(default_factory=collections.deque)
    reoffer_s: list[float] = field(default_factory=list)
    reoffer_waited_s: list[float] = field(default_factory=list)
    claims_after_refusal: int = 0

    @property
    def done(self) -> bool:
        return self.completed >= self.units

    def error(self, what: str) -> None:
        self.errors.append((time.perf_counter(), what))

    def errors_by_kind(self, last_completion: float | None) -> dict[str, int]:
        """Error counts; the ones after the server saw the last unit submitted (while it shuts its
        web process down, other clients' polls fail) are told apart from real ones."""
        counts: collections.Counter[str] = collections.Counter()
        for at, what in self.errors:
            late = last_completion is not None and at >= last_completion - 1.0
            counts[f"{what} (as the run shut down)" if late else what] += 1
        return dict(counts)

    def agent_arrived(self, now: float, refused_before: bool) -> None:
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        self.holding += 1
        self.holding_max = max(self.holding_max, self.holding)
        if refused_before:
            self.claims_after_refusal += 1
        if self.cap and self.freed_at:
            # Slot re-offer: pair each freed slot, oldest first, with the next unit some client got.
            delay = now - self.freed_at.popleft()
            self.reoffer_s.append(delay)
            if refused_before:
                self.reoffer_waited_s.append(delay)


class PostError(Exception):
    """A request that got no usable answer: connection trouble or an HTTP error status."""


class Poster(Protocol):
    """How a simulated worker posts JSON to the server and reads the JSON answer."""

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def connect(self) -> None: ...

    async def aclose(self) -> None: ...


class HttpxPoster:
    """Every simulated worker shares one pooled httpx.AsyncClient (about 4-5 ms of CPU a request)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.client.post(path, json=body)
        except httpx.HTTPError as error:
            raise PostError(describe(error)) from error
        if response.status_code != 200:
            raise PostError(f"HTTP {response.status_code}")
        answer: dict[str, Any] = response.json()
        return answer

    async def connect(self) -> None:
        pass  # the pool connects on demand

    async def aclose(self) -> None:
        pass  # the shared client is closed by its owner


class RawPoster:
    """One keep-alive HTTP/1.1 connection per simulated worker, as a browser tab would hold, written
    and parsed by hand: a tenth of httpx's CPU, so that the load generator leaves the cores to the
    server. Handles exactly what the server sends: a status line, headers, a Content-Length body."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection ahead of the timed phase, as a worker's browser has it open once the
        task page is loaded: request latencies then measure requests, not 50 simultaneous set-ups."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data
        for attempt in range(2):
            reused = self.writer is not None
            try:
                async with asyncio.timeout(self.timeout_s):
                    if self.reader is None or self.writer is None:
                        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                    self.writer.write(request)
                    head = await self.reader.readuntil(b"\r\n\r\n")
                    status, length, close = _parse_head(head)
                    payload = await self.reader.readexactly(length)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
                await self.aclose()
                quiet_close = isinstance(error, asyncio.IncompleteReadError) and not error.partial
                if attempt == 0 and reused and quiet_close:
                    continue  # the server closed an idle kept-alive connection: resend once, as browsers do
                raise PostError(f"{type(error).__name__}: {error!r}"[:160]) from error
            if close:
                await self.aclose()
            if status != 200:
                raise PostError(f"HTTP {status}")
            answer: dict[str, Any] = json.loads(payload)
            return answer
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, whether the server closes the connection) from a response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
        elif name == "transfer-encoding":
            raise OSError(f"unexpected Transfer-Encoding {value.strip()!r}")
    return status, length, close


def describe(error: httpx.HTTPError) -> str:
    cause = error.__cause__ or error.__context__
    detail = f"{error}" or repr(cause)
    while cause is not None and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    if cause is not None and f"{cause}" not in detail:
        detail = f"{detail} ({cause!r})"
    return f"{type(error).__name__}: {detail}"[:160]


def registration(worker: str, assignment: str) -> dict[str, Any]:
    """A request_agent body exactly as Mephisto's front end sends it with the mock provider."""
    return {
        "provider_data": {"worker_name": worker, "agent_registration_id": f"{assignment}-{worker}",
                          "assignment_id": assignment, "provider_type": "mock"},
        "client_timestamp": time.time(),
    }


class Workers:
    """C concurrent simulated workers; ``posters[i]`` is worker i's connection (or a shared pool)."""

    def __init__(self, posters: Sequence[Poster], measurements: Measurements, deadline: float,
                 on_done: Callable[[], None] | None = None, think_s: float = 0.0) -> None:
        self.posters = posters
        self.think_s = think_s
        self.m = measurements
        self.deadline = deadline
        self.on_done = on_done

    def _over(self) -> bool:
        return self.m.done or time.perf_counter() > self.deadline

    async def submit(self, poster: Poster, agent_id: str) -> None:
        body = {"USED_AGENT_ID": agent_id, "final_data": {"rating": "5", "comment": "fine"},
                "client_timestamp": time.time()}
        self.m.holding -= 1
        try:
            for attempt in range(5):  # a repeated submit is harmless: the server keeps the first answer
                began = time.perf_counter()
                try:
                    answer = await poster.post("/submit_task", body)
                except PostError as error:
                    self.m.error(f"submit_task {error}")
                    await asyncio.sleep(0.05)
                    continue
                now = time.perf_counter()
                self.m.submit_ok_s.append(now - began)
                retried = attempt > 0 and answer.get("status") == "Already submitted"
                if retried:  # the failed attempt had gone through: the unit is submitted all the same
                    self.m.error("submit_task retry answered 'Already submitted'")
                if answer.get("status") == "Submitted!" or retried:
                    self.m.completed += 1
                    if self.m.done and self.on_done is not None:
                        self.on_done()  # before the finished run starts shutting its processes down
                    self.m.completion_times.append(now)
                    if self.m.cap:
                        self.m.freed_at.append(now)
                else:
                    self.m.error("submit_task answered 'Already submitted'")
                return
        finally:
            self.m.in_flight -= 1

    async def work(self, index: int) -> None:
        poster = self.posters[index]
        sequence = 0
        while not self._over():
            sequence += 1
            body = registration(f"bench-{index}-{sequence}", f"{index}.{sequence}")
            refused_before = False
            agent_id: str | None = None
            while not self._over():
                began = time.perf_counter()
                try:
                    answer = await poster.post("/request_agent", body)
                except PostError as error:
                    self.m.error(f"request_agent {error}")
                else:
                    now = time.perf_counter()
                    agent_id = answer["data"]["agent_id"]
                    if agent_id is not None:
                        self.m.request_ok_s.append(now - began)
                        self.m.agent_arrived(now, refused_before)
                        break
                    self.m.request_refused_s.append(now - began)
                refused_before = True
                await asyncio.sleep(random.uniform(*REFUSAL_PAUSE_S))
            if agent_id is not None:
                if self.think_s:
                    await asyncio.sleep(self.think_s)  # the worker doing the task
                await self.submit(poster, agent_id)


async def first_unit(poster: Poster, run: RunProcess, deadline: float) -> tuple[str, float | None]:
    """Poll request_agent every ~20 ms until it hands out an agent; return that agent's id and when
    the server first answered at all (a refusal: it was up before any unit was launched)."""
    body = registration("bench-probe", "probe")
    first_answer: float | None = None
    while time.perf_counter() < deadline:
        if run.process.poll() is not None:
            raise RuntimeError(f"mephisto-dist run exited with {run.process.returncode}:\n{run.tail()}")
        try:
            agent_id = (await poster.post("/request_agent", body))["data"]["agent_id"]
            first_answer = first_answer or time.perf_counter()
            if agent_id:
                return str(agent_id), first_answer
        except PostError:
            pass  # the server is not listening yet
        await asyncio.sleep(PROBE_INTERVAL_S)
    raise TimeoutError(f"no unit was claimable before the deadline:\n{run.tail()}")


async def watch_run(run: RunProcess, measurements: Measurements) -> None:
    """Fail fast if the run process dies while units are still open."""
    while not measurements.done:
        if run.process.poll() is not None:
            raise RuntimeError(f"mephisto-dist run exited early with {run.process.returncode}:\n{run.tail()}")
        await asyncio.sleep(0.25)


# ---------------------------------------------------------------------------------------------------
# One benchmark run.


@dataclass
class Phase:
    first_answer_s: float | None = None
    began: float = 0.0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    server_waiting_s: dict[str, float] = field(default_factory=dict)
    client_waiting_s: float = 0.0
    machine_busy_s: float = 0.0  # every process on the machine: others' load skews the figures


def machine_busy_s() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores, from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass(frozen=True)
class Usage:
    """CPU time and time spent waiting for a CPU, per process of the run plus this client."""

    cpu_s: dict[ProcessId, float]
    waiting_s: dict[ProcessId, float]
    client_waiting_s: float
    machine_busy_s: float

    @classmethod
    def now(cls, run: RunProcess) -> Usage:
        tree = run.snapshot()
        return cls({p: cpu_seconds(p) for p in tree}, {p: runnable_wait_s(p.pid) for p in tree},
                   runnable_wait_s(os.getpid()), machine_busy_s())


def by_role(before: dict[ProcessId, float], after: dict[ProcessId, float]) -> dict[str, float]:
    names = {p: p.name for p in after} | {p: p.name for p in before}
    roles: dict[str, float] = {}
    for process, value in after.items():
        role = names[process]
        roles[role] = roles.get(role, 0.0) + value - before.get(process, 0.0)
    return roles


async def drive(args: argparse.Namespace, run: RunProcess, port: int, started_at: float,
                deadline: float) -> tuple[Measurements, float, Phase]:
    m = Measurements(units=args.units, cap=args.cap)
    phase = Phase()
    limits = httpx.Limits(max_connections=args.clients + 2, max_keepalive_connections=args.clients + 2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30.0) as client:
        posters: list[Poster] = (
            [RawPoster("127.0.0.1", port) for _ in range(args.clients + 1)] if args.client == "raw"
            else [HttpxPoster(client)] * (args.clients + 1))
        probe = posters[-1]
        probe_agent, first_answer = await first_unit(probe, run, deadline)
        time_to_first_unit_s = time.perf_counter() - started_at
        phase.first_answer_s = first_answer - started_at if first_answer else None
        m.agent_arrived(time.perf_counter(), refused_before=False)
        before = Usage.now(run)
        after: list[Usage] = []

        def on_done() -> None:
            after.append(Usage.now(run))

        await asyncio.gather(*(poster.connect() for poster in posters))
        client_cpu_before = time.process_time()
        workers = Workers(posters, m, deadline, on_done=on_done, think_s=args.think_ms / 1000)
        began = phase.began = time.perf_counter()
        profiler = start_py_spy(args.py_spy, run) if args.py_spy else None

        async def load_all() -> None:
            await asyncio.gather(workers.submit(probe, probe_agent),
                                 *(workers.work(index) for index in range(args.clients)))

        watcher = asyncio.create_task(watch_run(run, m))
        load = asyncio.create_task(load_all())
        try:
            # The deadline is enforced here, not only between requests, so a hung server cannot
            # keep the benchmark past --timeout.
            remaining_s = max(0.0, deadline - time.perf_counter())
            await asyncio.wait({load, watcher}, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                watcher.result()  # raises if the run process died
            await asyncio.wait({load}, timeout=max(1.0, deadline - time.perf_counter()))
            if load.done():
                load.result()
        finally:
            for task in (load, watcher):
                task.cancel()
            await asyncio.gather(load, watcher, return_exceptions=True)
            if profiler is not None:
                stop_py_spy(profiler)
            for poster in set(posters):
                await poster.aclose()
        ended = m.completion_times[-1] if m.done else time.perf_counter()
        phase.wall_s = ended - began
        phase.client_cpu_s = time.process_time() - client_cpu_before
        if not after:  # the deadline passed
            on_done()
        phase.machine_busy_s = after[0].machine_busy_s - before.machine_busy_s
        phase.server_cpu_s = by_role(before.cpu_s, after[0].cpu_s)
        phase.server_waiting_s = by_role(before.waiting_s, after[0].waiting_s)
        phase.client_waiting_s = after[0].client_waiting_s - before.client_waiting_s
        m.completion_times = [t - began for t in m.completion_times]
    return m, time_to_first_unit_s, phase


def start_py_spy(output: str, run: RunProcess) -> subprocess.Popen[bytes] | None:
    web = run.find("web")
    if web is None or shutil.which("py-spy") is None:
        print("py-spy or the web process not found: not profiling", file=sys.stderr)
        return None
    return subprocess.Popen(["py-spy", "record", "--pid", str(web.pid), "--rate", "200", "--format", "raw",
                             "--output", output, "--nonblocking", "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        profiler.wait(15)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait(5)


def run_benchmark(args: argparse.Namespace, database_url: str | None) -> dict[str, Any]:
    started_at = time.perf_counter()
    deadline = started_at + args.timeout - CLEANUP_RESERVE_S
    workdir = Path(tempfile.mkdtemp(prefix="mdist-throughput-"))
    run: RunProcess | None = None
    finished = False
    try:
        port = free_port()
        task_dir = workdir / "task"
        task_name = write_task_folder(task_dir, args.units, args.cap, port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
        env["MEPHISTO_DIST_DATA_DIR"] = str(workdir / "data")
        if database_url:
            env["MEPHISTO_DIST_DATABASE_URL"] = database_url
        if args.redis_url:
            env["MEPHISTO_DIST_REDIS_URL"] = args.redis_url
        executable = shutil.which("mephisto-dist")
        argv = [executable] if executable else [sys.executable, "-m", "mephisto_dist.cli.app"]
        started_at = time.perf_counter()
        run = RunProcess([*argv, "run", str(task_dir)], env, workdir / "run.log")
        m, ttfu_s, phase = asyncio.run(drive(args, run, port, started_at, deadline))
        finished = m.done
        run.stop(finished)
        server_open = max_open_units(run.log_path.read_text(errors="replace"))
        return report(args, m, ttfu_s, phase, task_name, database_url, server_open)
    finally:
        if run is not None:
            run.stop(finished)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# Reporting.


def percentiles_ms(samples: Sequence[float]) -> dict[str, float | int | None]:
    ordered = sorted(samples)

    def at(fraction: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 2)

    return {"count": len(ordered), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] * 1000, 2) if ordered else None}


def max_open_units(run_log: str) -> int | None:
    """The most units ``launched`` + ``assigned`` in the run's progress lines (sampled every 0.5 s)."""
    found = None
    for line in run_log.splitlines():
        counts = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "launched" in counts and "assigned" in counts:
            found = max(found or 0, int(counts["launched"]) + int(counts["assigned"]))
    return found


def report(args: argparse.Namespace, m: Measurements, ttfu_s: float, phase: Phase, task_name: str,
           database_url: str | None, server_open: int | None) -> dict[str, Any]:
    per_second = collections.Counter(int(t) for t in m.completion_times)
    last_completion = m.completion_times[-1] + phase.began if m.done else None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "config": {"units": args.units, "clients": args.clients, "cap": args.cap, "think_ms": args.think_ms,
                   "client": args.client,
                   "task_name": task_name,
                   "database": "postgresql" if database_url else "sqlite (embedded)",
                   "redis": "given" if args.redis_url else "embedded", "cpus": os.cpu_count()},
        "completed_units": m.completed,
        "all_submitted": m.done,
        "units_per_s": round(m.completed / phase.wall_s, 1) if phase.wall_s else None,
        "working_phase_s": round(phase.wall_s, 3),
        "time_to_first_unit_s": round(ttfu_s, 3),
        "time_to_first_answer_s": None if phase.first_answer_s is None else round(phase.first_answer_s, 3),
        "request_agent": percentiles_ms(m.request_ok_s),
        "request_agent_refused": percentiles_ms(m.request_refused_s),
        "submit_task": percentiles_ms(m.submit_ok_s),
        "errors": m.errors_by_kind(last_completion),
        "max_in_flight": m.in_flight_max,
        "max_certainly_held": m.holding_max,
        "server_max_open_units": server_open,
        "cap_respected": (max(m.holding_max, server_open or 0) <= args.cap) if args.cap else None,
        "claims_after_refusal": m.claims_after_refusal,
        "slot_reoffer": percentiles_ms(m.reoffer_s) if args.cap else None,
        "slot_reoffer_to_waiting": percentiles_ms(m.reoffer_waited_s) if args.cap else None,
        "client_cpu_s": round(phase.client_cpu_s, 2),
        "client_cpu_share_of_wall": round(phase.client_cpu_s / phase.wall_s, 2) if phase.wall_s else None,
        "client_cpu_total_s": round(usage.ru_utime + usage.ru_stime, 2),
        "server_cpu_s": {role: round(s, 2) for role, s in sorted(phase.server_cpu_s.items())},
        "client_waiting_for_cpu_s": round(phase.client_waiting_s, 2),
        "server_waiting_for_cpu_s": {role: round(s, 2) for role, s in sorted(phase.server_waiting_s.items())},
        "other_processes_cpu_s": round(phase.machine_busy_s - phase.client_cpu_s
                                       - sum(phase.server_cpu_s.values()), 2),
        "load_average_1m_at_end": float(Path("/proc/loadavg").read_text().split()[0]),
        "completions_per_second": [per_second.get(i, 0) for i in range(int(max(m.completion_times,
                                                                                 default=0)) + 1)],
    }


def print_table(result: dict[str, Any]) -> None:
    c = result["config"]
    print(f"\n{c['units']} units, {c['clients']} clients, cap {c['cap'] or 'none'}, {c['database']}, "
          f"redis {c['redis']}, {c['cpus']} cpus")
    print(f"  completed          {result['completed_units']}/{c['units']}"
          f"{'' if result['all_submitted'] else '  (DEADLINE PASSED)'}")
    print(f"  units/s            {result['units_per_s']}   (working phase {result['working_phase_s']} s; "
          f"target >= 300, Mephisto 5 capped / 60-75 uncapped)")
    print(f"  first unit         {result['time_to_first_unit_s']} s after start   (target < 2 s, Mephisto 8 s; "
          f"the web server first answered at {result['time_to_first_answer_s']} s)")
    print(f"  {'latency (ms)':<18} {'n':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    for key, label in (("request_agent", "request_agent"), ("submit_task", "submit_task"),
                       ("request_agent_refused", "  refusals"), ("slot_reoffer", "slot re-offer"),
                       ("slot_reoffer_to_waiting", "  to a waiter")):
        row = result.get(key)
        if row:
            cells = " ".join(f"{'-' if row[k] is None else row[k]:>8}" for k in ("p50_ms", "p95_ms", "p99_ms",
                                                                                  "max_ms"))
            print(f"  {label:<18} {row['count']:>7} {cells}")
    if c["cap"]:
        verdict = "ok" if result["cap_respected"] else "EXCEEDED"
        print(f"  max in flight      {result['max_certainly_held']} certainly held (answer -> submit sent), "
              f"{result['max_in_flight']} answer -> submit answered, "
              f"{result['server_max_open_units']} launched+assigned in the run's progress lines "
              f"(cap {c['cap']}: {verdict})")
    if result["errors"]:
        print(f"  errors             {result['errors']}")
    print(f"  client CPU         {result['client_cpu_s']} s over {result['working_phase_s']} s wall "
          f"({result['client_cpu_share_of_wall']} cores)")
    server = ", ".join(f"{role} {s}" for role, s in result["server_cpu_s"].items())
    print(f"  server CPU (s)     {server}")
    waiting = ", ".join(f"{role} {s}" for role, s in result["server_waiting_for_cpu_s"].items())
    print(f"  waiting for a CPU  client {result['client_waiting_for_cpu_s']} s; {waiting}")
    print(f"  other processes    {result['other_processes_cpu_s']} CPU s during the phase "
          f"(load average {result['load_average_1m_at_end']}: anything but ~0 skews the figures)")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--units", type=int, default=3000, help="rows in the CSV = units (default 3000)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent simulated workers (default 50)")
    parser.add_argument("--cap", type=int, default=0, help="max_num_concurrent_units (default 0 = none)")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="raw: one hand-written keep-alive HTTP/1.1 connection per worker (cheap); "
                             "httpx: one pooled httpx.AsyncClient (default raw)")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="time a simulated worker holds its unit before submitting (default 0)")
    parser.add_argument("--timeout", type=float, default=300.0, help="the benchmark ends within this (s)")
    parser.add_argument("--database-url", help="PostgreSQL URL: a fresh database is made on its server")
    parser.add_argument("--redis-url", help="shared Redis; give it a db number of its own (redis://h:p/9)")
    parser.add_argument("--py-spy", metavar="FILE", help="py-spy record the web process (raw stacks) here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    args = parser.parse_args()
    if args.timeout <= CLEANUP_RESERVE_S + 5:
        parser.error(f"--timeout must exceed {CLEANUP_RESERVE_S + 5:g} s (cleanup needs {CLEANUP_RESERVE_S:g})")
    signal.signal(signal.SIGTERM, _interrupt)  # a killed benchmark still stops the run it started

    try:
        if args.database_url and args.database_url.startswith("postgresql"):
            with fresh_postgres(args.database_url) as url:
                result = run_benchmark(args, url)
        else:
            result = run_benchmark(args, args.database_url)
    except (RuntimeError, TimeoutError) as error:  # the run died, or no unit came before the deadline
        print(f"benchmark failed: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run was stopped on the way out
        print("interrupted; the run's processes were stopped", file=sys.stderr)
        sys.exit(130)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if not result["all_submitted"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
