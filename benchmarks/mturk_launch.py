"""Launching on MTurk, rehearsed on mturk-local: HITs per second against the provider-call rate, and
the time from a submit to its replacement HIT being assignable.

    python benchmarks/mturk_launch.py [--units 1000] [--cap 10] [--replacements 200] [--turk-rate 10]
                                      [--json out.json]

Everything is real and local: ``mephisto-dist mturk-local`` (throttling above ``--turk-rate`` calls a
second, as MTurk does), a requester registered on it, and ``mephisto-dist run`` on the embedded default
with the ``mturk_sandbox`` provider. Phase 1 launches ``--units`` units uncapped and samples how many
HITs mturk-local holds; the rate is compared with ``MEPHISTO_DIST_PROVIDER_CALLS_PER_S`` (the shared
bucket, default 5). Phase 2 runs a second task capped at ``--cap`` and, one simulated worker at a time,
accepts a HIT at mturk-local, does the task over HTTP at our server, submits (and completes the MTurk
assignment), then measures until a HIT it has never seen is assignable.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise SystemExit(f"timed out after {timeout_s}s waiting for {what}")


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEPHISTO_DIST_", "AWS_"))}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(home / "data"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "creds"),
                "AWS_CONFIG_FILE": str(home / "aws-config"), "COLUMNS": "200", "PYTHONPATH": str(ROOT)})
    return env


def cli(home: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT, env=env_for(home),
                   check=True, capture_output=True, text=True, timeout=120)


def task_folder(root: Path, name: str, units: int, cap: int, port: int) -> Path:
    folder = root / name
    (folder / "hydra_configs" / "conf").mkdir(parents=True)
    (folder / "task.html").write_text('<p>${sentence}</p><input name="rating" value="3">')
    (folder / "data.csv").write_text("sentence\n" + "".join(f"sentence {i}\n" for i in range(units)))
    (folder / "hydra_configs" / "conf" / "example.yaml").write_text(f"""# @package _global_
defaults:
  - /mephisto/blueprint: static_task
  - /mephisto/architect: local
  - /mephisto/provider: mturk_sandbox
mephisto:
  blueprint:
    data_csv: ${{task_dir}}/data.csv
    task_source: ${{task_dir}}/task.html
  architect:
    port: {port}
  provider:
    requester_name: bench
  task:
    task_name: {name}
    task_title: "Benchmark"
    task_description: "A benchmark task"
    task_tags: "bench"
    task_reward: 0.05
    max_num_concurrent_units: {cap}
""")
    return folder


def start(home: Path, *command: str) -> subprocess.Popen[bytes]:
    log = (home / f"{command[0]}-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", *command], cwd=ROOT, env=env_for(home),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def hit_count(turk: str) -> int:
    return int(httpx.get(f"{turk}/api/stats").json()["Rows"]["hit"])


def phase_launch(home: Path, turk: str, units: int) -> dict[str, Any]:
    port = free_port()
    run = start(home, "run", str(task_folder(home, "bench-launch", units, 0, port)))
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    try:
        while True:
            count = hit_count(turk)
            samples.append((time.monotonic() - started, count))
            if count >= units:
                break
            if run.poll() is not None or time.monotonic() - started > 3600:
                raise SystemExit("the run stopped before every HIT was made")
            time.sleep(0.2)
    finally:
        kill(run)
    first = next(t for t, n in samples if n > 0)
    last = samples[-1][0]
    return {"units": units, "first_hit_s": round(first, 2), "all_hits_s": round(last, 2),
            "hits_per_s": round((units - 1) / max(last - first, 1e-9), 2)}


def phase_replacement(home: Path, turk: str, cap: int, count: int) -> dict[str, Any]:
    port = free_port()
    before = hit_count(turk)
    run = start(home, "run", str(task_folder(home, "bench-refill", count + cap, cap, port)))
    server = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    seen: set[str] = set()

    def assignable() -> list[str]:
        return [h["HITId"] for h in httpx.get(f"{turk}/api/hits").json()["HITs"]]

    try:
        wait_until(lambda: hit_count(turk) - before >= cap, 120, f"{cap} HITs")
        wait_until(lambda: _answers(server), 60, "the run's server")
        seen.update(assignable())
        for number in range(count):
            worker = f"A1BENCH{number}"
            hit_id = wait_until(assignable, 30, "an assignable HIT")[0]
            view = httpx.post(f"{turk}/api/hits/{hit_id}/accept", json={"workerId": worker}).json()
            agent = httpx.post(f"{server}/request_agent", json={"provider_data": {
                "worker_name": worker, "assignment_id": view["AssignmentId"], "hit_id": hit_id,
                "agent_registration_id": f"{view['AssignmentId']}-{worker}"}}).json()["data"]["agent_id"]
            httpx.post(f"{server}/submit_task", json={"USED_AGENT_ID": agent, "final_data": {"rating": "3"}})
            submitted = time.monotonic()
            httpx.post(f"{turk}/mturk/externalSubmit", data={"assignmentId": view["AssignmentId"]},
                       headers={"accept": "application/json"})
            fresh = wait_until(lambda: [h for h in assignable() if h not in seen], 60, "a replacement HIT", 0.01)
            latencies.append(time.monotonic() - submitted)
            seen.update(fresh)
    finally:
        kill(run)
    ordered = sorted(latencies)
    return {"cap": cap, "submits": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/task_config.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def local_turk(home: Path, rate: float) -> Iterator[str]:
    """mturk-local on a free port, with a requester ``bench`` registered on it."""
    port = free_port()
    process = start(home, "mturk-local", "--port", str(port), "--db", str(home / "turk.sqlite3"),
                    "--rate", str(rate))
    turk = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers_turk(turk), 30, "mturk-local")
        cli(home, "register", "mturk_sandbox", "name=bench", "access_key_id=AKIDBENCH",
            "secret_access_key=bench-secret", f"endpoint_url={turk}")
        yield turk
    finally:
        kill(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--replacements", type=int, default=200)
    parser.add_argument("--turk-rate", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "provider_calls_per_s": float(os.environ.get("MEPHISTO_DIST_PROVIDER_CALLS_PER_S") or 5),
        "turk_rate_per_s": args.turk_rate}
    # Each phase on its own mturk-local and data directory: the first one's HITs stay up.
    with tempfile.TemporaryDirectory(prefix="mturk-bench-") as scratch, \
            local_turk(Path(scratch), args.turk_rate) as turk:
        result["launch"] = phase_launch(Path(scratch), turk, args.units)
    with tempfile.TemporaryDirectory(prefix="mturk-bench-") as scratch, \
            local_turk(Path(scratch), args.turk_rate) as turk:
        result["replacement"] = phase_replacement(Path(scratch), turk, args.cap, args.replacements)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _answers_turk(url: str) -> bool:
    try:
        return httpx.get(url + "/api/stats", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
