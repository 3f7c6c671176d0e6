"""Benchmark live two-worker chats: many conversations at once through assignment runners, seen from the
pages.

    python benchmarks/chats.py [--chats 500] [--turns 10] [--think-ms 1000] [--webs 2]
                               [--runner-threads N] [--database-url URL] [--json out.json]

``examples/chat_pair_task`` (a task script's own concurrent TaskRunner: a greeting to each speaker, then
``--turns`` turns in which each agent ``act``s and its partner ``observe``s what it said) is launched with
``run --detach`` on a fresh database (SQLite in a temporary directory, or a fresh database on the
PostgreSQL server of ``--database-url``) and a private ``redis-server``, one assignment (two units) per
chat. ``--webs`` web processes, a Celery worker, beat and the runner worker (``-P threads``, one thread
per chat by default) are started as subprocesses.

Two simulated pages per chat (asyncio tasks in this process, spread over the web processes) each get an
agent over HTTP, open the router's websocket, send ``alive`` and a heartbeat every 6 s (as mephisto-task
does), and answer: the speaker whose turn it is says something ``--think-ms`` after the greeting or the
partner's message (1 s: each page speaks every 2 s, the conversation once a second). When the runner
says ``task_done`` both submit. Pages that get the same topic (one per assignment) are partners.

Reported:
- message relay, page -> runner -> partner page: from sending a message to the partner receiving it
  (both pages are in this process, on one clock), p50/p90/p99/max;
- a pair's start: from the second partner's accepted request_agent to both pages holding the runner's
  greeting (the world's first message);
- chats finished, errors, and CPU seconds and memory (RSS) of each process kind; the runner worker's
  memory and CPU per chat while every chat waits on ``act``.

Targets (issue 20): 500 chats on two cores with relay p50 < 30 ms and p99 < 150 ms. Mephisto's FAQ advises
30-50 live units per server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from live import (
    answers,
    database,
    free_port,
    percentile_ms,
    private_redis,
    process_cpu_s,
    start,
    stop,
    wait_until,
)

EXAMPLE = ROOT / "examples" / "chat_pair_task"
HEARTBEAT_S = 6.0  # mephisto-task 2.0.4: heartbeatTime defaults to 6000 ms
CELERY = [sys.executable, "-m", "celery", "-A"]


def task_dir(directory: Path, chats: int, turns: int) -> Path:
    folder = directory / "chat_pair_task"
    (folder / "hydra_configs" / "conf").mkdir(parents=True)
    shutil.copy(EXAMPLE / "run_task.py", folder / "run_task.py")
    (folder / "bundle.js").write_text("/* not loaded: the pages are simulated */\n")
    topics = json.dumps([f"topic {number}" for number in range(chats)])
    (folder / "hydra_configs" / "conf" / "example.yaml").write_text(f"""#@package _global_
defaults:
  - /mephisto/blueprint: remote_procedure
  - /mephisto/architect: mock
  - /mephisto/provider: mock
mephisto:
  blueprint:
    task_source: ${{task_dir}}/bundle.js
    link_task_source: false
    units_per_assignment: 2
  task:
    task_name: chats-bench
    task_title: "Chat"
    task_description: "Chat with another worker"
    task_reward: 0.1
    task_tags: "bench"
    partner_wait_in_seconds: 600
    max_num_concurrent_units: 0
num_turns: {turns}
turn_timeout: 120
topics: {topics}
""")
    return folder


def memory_mb(pid: int) -> float:
    """Resident memory of a process and the rest of its process group, from /proc."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1)


@dataclass
class Figures:
    relay_s: list[float] = field(default_factory=list)
    relay_open: list[int] = field(default_factory=list)  # chats open when each relayed message was sent
    open_chats: int = 0  # chats whose both pages hold the greeting and neither has been told it is done
    lag_s: list[float] = field(default_factory=list)  # this process's own event-loop lag, sampled
    accepted: dict[str, list[float]] = field(default_factory=dict)  # topic -> accept times of its pages
    greeted: dict[str, list[float]] = field(default_factory=dict)   # topic -> greeting times
    finished: int = 0
    errors: list[str] = field(default_factory=list)


class ChatPage:
    """One simulated page on its websocket: heartbeats, and a turn taken ``think_s`` after the greeting
    (speaker 0) or the partner's message."""

    def __init__(self, socket_: Any, agent_id: str, topic: str, think_s: float, figures: Figures,
                 all_greeted: asyncio.Event, pages: int) -> None:
        self.socket, self.agent_id, self.topic, self.think_s = socket_, agent_id, topic, think_s
        self.figures, self.all_greeted, self.pages = figures, all_greeted, pages
        self.tasks: set[asyncio.Task[None]] = set()
        self.seen: set[str] = set()
        self.counted = False  # this page (speaker 0 of its chat) counts its chat in ``open_chats``

    async def send(self, packet: dict[str, Any]) -> None:
        packet.setdefault("client_timestamp", time.time())
        await self.socket.send(json.dumps(packet))

    async def beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self.send({"packet_type": "heartbeat", "subject_id": self.agent_id})

    async def speak(self, turn: int) -> None:
        await asyncio.sleep(self.think_s)
        await self.send({"packet_type": "mephisto_bound_live_update", "subject_id": self.agent_id,
                         "data": {"text": json.dumps({"sent": time.perf_counter(), "turn": turn,
                                                      "open": self.figures.open_chats}),
                                  "id": self.agent_id, "update_id": f"{self.agent_id}-{turn}"}})

    def later(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_update(self, data: dict[str, Any]) -> bool:
        """Handle one runner message; True once the runner says the task is done."""
        task_data = data.get("task_data") or {}
        if task_data.get("task_done"):
            if self.counted:
                self.figures.open_chats -= 1
                self.counted = False
            return True
        if "speaker" in task_data:  # the greeting: speaker 0 opens the conversation
            greeted = self.figures.greeted.setdefault(self.topic, [])
            greeted.append(time.perf_counter())
            if task_data["speaker"] == 0:
                self.figures.open_chats += 1
                self.counted = True
            if sum(len(times) for times in self.figures.greeted.values()) >= self.pages:
                self.all_greeted.set()
            if task_data["speaker"] == 0:
                self.later(self.speak(0))
        elif "text" in data and "speaker" in data:  # the partner's turn, relayed
            said = json.loads(data["text"])
            self.figures.relay_s.append(time.perf_counter() - float(said["sent"]))
            self.figures.relay_open.append(int(said.get("open", 0)))
            self.later(self.speak(int(said["turn"]) + 1))
        return False

    async def converse(self) -> None:
        await self.send({"packet_type": "alive", "subject_id": self.agent_id, "data": {}})
        self.later(self.beat())
        try:
            async for raw in self.socket:
                packet = json.loads(raw)
                data = packet.get("data") or {}
                if packet["packet_type"] != "client_bound_live_update" or data.get("update_id") in self.seen:
                    continue
                self.seen.add(data.get("update_id"))
                if self.on_update(data):
                    return
        finally:
            if self.counted:
                self.figures.open_chats -= 1
                self.counted = False
            for task in list(self.tasks):
                task.cancel()


async def chat_page(client: httpx.AsyncClient, base_url: str, worker: str, think_s: float, figures: Figures,
                    all_greeted: asyncio.Event, pages: int) -> None:
    # One client shared by the pages (one each built an SSL context: 20 ms of the pages' loop apiece).
    answer = await client.post(base_url + "/request_agent", json={"provider_data": {
        "worker_name": worker, "assignment_id": worker, "agent_registration_id": f"{worker}-{worker}",
        "provider_type": "mock"}})
    details = answer.json()["data"]
    accepted_at = time.perf_counter()
    agent_id = details["agent_id"]
    if agent_id is None:
        figures.errors.append(f"{worker}: {details.get('failure_reason')}")
        return
    topic = str(details["init_task_data"]["task_data"]["topic"])
    figures.accepted.setdefault(topic, []).append(accepted_at)
    async with websockets.connect(base_url.replace("http://", "ws://") + "/", max_queue=None) as socket_:
        await ChatPage(socket_, agent_id, topic, think_s, figures, all_greeted, pages).converse()
    done = await client.post(base_url + "/submit_task", json={"USED_AGENT_ID": agent_id,
                                                            "final_data": {"rating": 5}})
    if done.status_code == 200:
        figures.finished += 1
    else:
        figures.errors.append(f"{worker}: submit {done.status_code} {done.text[:80]}")


async def loop_lag(figures: Figures, every_s: float = 0.05) -> None:
    """How late this process's event loop wakes a sleeper: the pages' own share of every relay figure."""
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(every_s)
        figures.lag_s.append(max(0.0, time.perf_counter() - asked - every_s))


async def drive(urls: list[str], chats: int, think_s: float, ramp_s: float, runner_pid: int,
                figures: Figures, page_timeout_s: float) -> dict[str, float]:
    pages = 2 * chats
    lag = asyncio.create_task(loop_lag(figures))
    all_greeted = asyncio.Event()
    tasks = []
    client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None, max_keepalive_connections=200))
    for number in range(pages):
        page = chat_page(client, urls[number % len(urls)], f"page{number}", think_s, figures, all_greeted, pages)
        tasks.append(asyncio.create_task(asyncio.wait_for(page, timeout=page_timeout_s)))
        await asyncio.sleep(random.uniform(0, 2 * ramp_s / pages))  # people arrive over --ramp-s, not at once
    waiting: dict[str, float] = {}
    try:
        await asyncio.wait_for(all_greeted.wait(), timeout=600)
        # Every chat has started: the runner worker holds one runner per chat, each waiting on act.
        waiting = {"runner_rss_mb": memory_mb(runner_pid), "runner_cpu_s": process_cpu_s(runner_pid)}
    except TimeoutError:
        figures.errors.append("not every chat started within 600 s")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    lag.cancel()
    await client.aclose()
    figures.errors += [repr(result) for result in results if isinstance(result, BaseException)]
    return waiting


def run_loop(work: Any) -> Any:
    """The simulated pages on uvloop: the load generator shares the machine's two cores with what it
    measures, and the cheaper it is, the less of each figure is its own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


def full_open(figures: Figures, chats: int) -> list[float]:
    """Relays of the messages sent while at least 95% of the chats were open at once."""
    floor = 0.95 * chats
    return [relay for relay, open_ in zip(figures.relay_s, figures.relay_open, strict=True) if open_ >= floor]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--turns", type=int, default=30,
                        help="turns per conversation (each speaker once a turn; the default outlasts the ramp, "
                             "so every chat is open at once for about half the run)")
    parser.add_argument("--think-ms", type=float, default=1000.0, help="a page's pause before it answers")
    parser.add_argument("--ramp-s", type=float, default=30.0, help="pages arrive spread over this time")
    parser.add_argument("--webs", type=int, default=2)
    parser.add_argument("--runner-threads", type=int, default=None, help="default: one per chat, and 10 more")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="chats-bench-"))
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    figures = Figures()
    try:
        with private_redis(directory) as redis_url, database(args.database_url, directory) as database_url:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
            env.update({"MEPHISTO_DIST_DATA_DIR": str(directory / "data"), "MEPHISTO_DIST_DATABASE_URL": database_url,
                        "MEPHISTO_DIST_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)})
            subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "migrate"], cwd=ROOT, env=env,
                           check=True, capture_output=True)
            launched = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "run",
                                       str(task_dir(directory, args.chats, args.turns)), "--detach", "-q"],
                                      cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            if launched.returncode != 0:
                raise SystemExit(f"run --detach failed: {launched.stderr.strip()}")
            run_id = int(launched.stdout.strip().splitlines()[-1])
            threads = args.runner_threads or args.chats + 10
            quiet = ["--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
            processes.append(("worker", start(
                [*CELERY, "mephisto_dist.celery.worker", "worker", "--concurrency", "2", *quiet,
                 "--hostname", f"chats-{os.getpid()}@%h"], env, directory / "worker.log")))
            processes.append(("runner", start(
                [*CELERY, "mephisto_dist.celery.runner_worker", "worker", "-Q", "assignments", "-P", "threads",
                 "-c", str(threads), *quiet, "--hostname", f"chats-runner-{os.getpid()}@%h"],
                env, directory / "runner.log")))
            processes.append(("beat", start(
                [*CELERY, "mephisto_dist.celery.beat", "beat", "--loglevel", "WARNING",
                 "--schedule", str(directory / "celerybeat-schedule")], env, directory / "beat.log")))
            urls = []
            for number in range(args.webs):
                port = free_port()
                processes.append(("web", start([sys.executable, "-m", "mephisto_dist.cli.app", "web", "--run",
                                                str(run_id), "--port", str(port)], env, directory / f"web{number}.log")))
                urls.append(f"http://127.0.0.1:{port}")
            for url in urls:
                wait_until(lambda url=url: answers(url), 60, f"the web process at {url}")
            time.sleep(3)  # the Celery workers finish starting (their log level hides "ready")
            runner = next(process for kind, process in processes if kind == "runner")
            idle = {"runner_rss_mb": memory_mb(runner.pid), "runner_cpu_s": process_cpu_s(runner.pid)}
            cpu_before = {id(p): process_cpu_s(p.pid) for _, p in processes}
            started = time.perf_counter()
            load_before = time.process_time()
            # A page gives up when its chat has not ended long after it should have (a stuck runner).
            page_timeout_s = args.ramp_s + 2 * args.turns * (args.think_ms / 1000 + 5) + 600
            waiting = run_loop(drive(urls, args.chats, args.think_ms / 1000, args.ramp_s, runner.pid, figures,
                                        page_timeout_s))
            wall_s = time.perf_counter() - started
            cpu: dict[str, float] = {}
            for kind, process in processes:
                cpu[kind] = round(cpu.get(kind, 0.0) + process_cpu_s(process.pid) - cpu_before[id(process)], 2)
            cpu["pages (this process)"] = round(time.process_time() - load_before, 2)
    finally:
        for _, process in processes:
            stop(process)
        shutil.rmtree(directory, ignore_errors=True)
    starts = [max(figures.greeted[topic]) - max(accepted) for topic, accepted in figures.accepted.items()
              if len(accepted) == 2 and len(figures.greeted.get(topic, [])) == 2]
    at_full = full_open(figures, args.chats)
    per_chat = {}
    if waiting:
        per_chat = {"rss_mb_per_waiting_runner": round((waiting["runner_rss_mb"] - idle["runner_rss_mb"]) / args.chats, 3),
                    "runner_rss_mb_idle": idle["runner_rss_mb"], "runner_rss_mb_all_chats_open": waiting["runner_rss_mb"]}
    result = {
        "chats": args.chats, "pages": 2 * args.chats, "turns": args.turns, "think_ms": args.think_ms,
        "webs": args.webs, "runner_threads": args.runner_threads or args.chats + 10,
        "database": "postgresql" if args.database_url else "sqlite", "cpus": os.cpu_count(),
        "pages_finished": figures.finished, "errors": len(figures.errors), "wall_s": round(wall_s, 1),
        "messages_relayed": len(figures.relay_s),
        "relay_ms": {"p50": percentile_ms(figures.relay_s, 0.5), "p90": percentile_ms(figures.relay_s, 0.9),
                     "p99": percentile_ms(figures.relay_s, 0.99), "max": round(max(figures.relay_s) * 1000, 1),
                     "mean": round(statistics.fmean(figures.relay_s) * 1000, 1)} if figures.relay_s else None,
        "relay_ms_with_95pct_of_chats_open": ({
            "messages": len(at_full), "p50": percentile_ms(at_full, 0.5), "p90": percentile_ms(at_full, 0.9),
            "p99": percentile_ms(at_full, 0.99), "max": round(max(at_full) * 1000, 1)} if at_full else None),
        "most_chats_open_at_a_send": max(figures.relay_open, default=0),
        "pages_loop_lag_ms": {"p50": percentile_ms(figures.lag_s, 0.5), "p99": percentile_ms(figures.lag_s, 0.99),
                              "max": round(max(figures.lag_s) * 1000, 1)} if figures.lag_s else None,
        "pair_start_ms": {"p50": percentile_ms(starts, 0.5), "p99": percentile_ms(starts, 0.99),
                          "max": round(max(starts) * 1000, 1)} if starts else None,
        "memory": per_chat, "cpu_s": cpu,
        "runner_cpu_ms_per_message": round(cpu.get("runner", 0) * 1000 / len(figures.relay_s), 2) if figures.relay_s else None,
    }
    print(json.dumps(result, indent=2))
    if figures.errors:
        print("first errors:", figures.errors[:5], file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
