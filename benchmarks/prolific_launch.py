"""Launching on Prolific, rehearsed on prolific-local: the calls a large run makes to Prolific, the
seconds until all its places are available, and what beat's study reconciler costs per 1,000 submissions.

    python benchmarks/prolific_launch.py [--units 10000] [--calls-per-s 50] [--submissions 1000,3000]
                                         [--json out.json]

Everything is real and local: ``mephisto-dist prolific-local`` (its state in SQLite), a requester
registered on it, a Redis server of its own, and ``mephisto-dist run`` on the embedded default with the
``prolific`` provider, launching ``--units`` units uncapped (the shared provider-call bucket at
``--calls-per-s``). Phase 1 samples the study's places until all are there and reads prolific-local's
count of calls by endpoint. Then the run is killed, simulated participants take places and come back with
the completion code (their work never reaches us, so each is a submission the reconciler must record),
and the reconciler's pass (``reconcile.studies.reconcile_studies``, as beat runs it) is timed in this
process at each total of ``--submissions``: the first pass over the new ones (it records them) and a
second over the same (nothing new), with the calls each made.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "prolific-bench-token"


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


def env_for(home: Path, redis_url: str, calls_per_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEPHISTO_DIST_", "PROLIFIC_"))}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(home / "data"), "MEPHISTO_DIST_REDIS_URL": redis_url,
                "MEPHISTO_DIST_PROVIDER_CALLS_PER_S": str(calls_per_s), "MEPHISTO_DIST_DEPLOYMENT": "bench",
                "PROLIFIC_CREDENTIALS_FILE": str(home / "prolific-credentials"), "COLUMNS": "200",
                "PYTHONPATH": str(ROOT)})
    return env


def task_folder(root: Path, units: int, port: int) -> Path:
    folder = root / "bench-prolific"
    (folder / "hydra_configs" / "conf").mkdir(parents=True)
    (folder / "task.html").write_text('<p>${sentence}</p><input name="rating" value="3">')
    (folder / "data.csv").write_text("sentence\n" + "".join(f"sentence {i}\n" for i in range(units)))
    (folder / "hydra_configs" / "conf" / "example.yaml").write_text(f"""# @package _global_
defaults:
  - /mephisto/blueprint: static_task
  - /mephisto/architect: local
  - /mephisto/provider: prolific
mephisto:
  blueprint:
    data_csv: ${{task_dir}}/data.csv
    task_source: ${{task_dir}}/task.html
  architect:
    port: {port}
  provider:
    requester_name: bench
  task:
    task_name: bench-prolific
    task_title: "Benchmark"
    task_description: "A benchmark task"
    task_tags: "bench"
    task_reward: 0.05
    max_num_concurrent_units: 0
""")
    return folder


def start(home: Path, env: dict[str, str], *command: str) -> subprocess.Popen[bytes]:
    log = (home / f"{command[3] if len(command) > 3 else Path(command[0]).name}-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen(list(command), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


@contextmanager
def services(home: Path, calls_per_s: float) -> Iterator[tuple[str, dict[str, str]]]:
    """A Redis server and prolific-local on free ports, a requester ``bench`` registered on it."""
    redis_port, port = free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = env_for(home, f"redis://127.0.0.1:{redis_port}/0", calls_per_s)
    local = start(home, env, sys.executable, "-m", "mephisto_dist.cli.app", "prolific-local", "--port", str(port),
                  "--db", str(home / "prolific.sqlite3"), "--processing-s", "0.5")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url + "/local/stats"), 30, "prolific-local")
        subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "register", "prolific", "name=bench",
                        f"api_key={TOKEN}", f"endpoint_url={url}"], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=120)
        yield url, env
    finally:
        kill(local)
        kill(redis)


def _logs(home: Path, name: str) -> str:
    return "\n".join(log.read_text(errors="replace")[-3000:] for log in sorted(home.glob(f"{name}-*.log")))


def calls(url: str) -> dict[str, int]:
    return dict(httpx.get(f"{url}/local/stats").json()["Calls"])


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0)}


def the_study(url: str) -> dict[str, Any] | None:
    found = httpx.get(f"{url}/api/v1/studies/", headers={"Authorization": f"Token {TOKEN}"}).json()["results"]
    return found[0] if found else None


def phase_launch(home: Path, url: str, env: dict[str, str], units: int) -> tuple[dict[str, Any], str]:
    run = start(home, env, sys.executable, "-m", "mephisto_dist.cli.app", "run",
                str(task_folder(home, units, free_port())))
    started = time.monotonic()
    first: float | None = None
    try:
        study = wait_until(lambda: the_study(url) or run.poll() is not None, 300, "the study", 0.1)
        if run.poll() is not None:
            raise SystemExit("the run stopped before making its study:\n" + _logs(home, "run"))
        first = time.monotonic() - started
        study_id = str(study["id"])
        while True:
            places = int(httpx.get(f"{url}/local/studies/{study_id}/state").json()["total_available_places"])
            if places >= units:
                break
            if run.poll() is not None or time.monotonic() - started > 7200:
                raise SystemExit(f"the run stopped at {places} places:\n" + _logs(home, "run"))
            time.sleep(0.25)
        all_s = time.monotonic() - started
    finally:
        kill(run)
    made = calls(url)
    return {"units": units, "study_made_s": round(first, 2), "all_places_s": round(all_s, 2),
            "places_per_s": round((units - 1) / max(all_s - first, 1e-9), 1), "calls": made,
            "calls_total": sum(made.values())}, study_id


def take_places(url: str, study_id: str, first: int, count: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        code = client.get(f"/api/v1/studies/{study_id}/", headers={"Authorization": f"Token {TOKEN}"}).json()[
            "completion_codes"][0]["code"]
        for number in range(first, first + count):
            who = f"PBENCH{number:06d}"
            client.post(f"/local/studies/{study_id}/start", json={"participant_id": who}).raise_for_status()
            client.get(f"/submissions/complete?cc={code}&PROLIFIC_PID={who}",
                       headers={"accept": "application/json"}).raise_for_status()


def phase_reconcile(url: str, env: dict[str, str], study_id: str, totals: list[int]) -> list[dict[str, Any]]:
    os.environ.update({k: v for k, v in env.items() if k.startswith(("MEPHISTO_DIST_", "PROLIFIC_"))})
    from mephisto_dist.providers.prolific.provider import ProlificProvider
    from mephisto_dist.reconcile.studies import StudyAccount, reconcile_studies
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings

    runtime = Runtime(load_settings())
    account = StudyAccount("prolific", "bench", ProlificProvider(
        {"requester_name": "bench", "endpoint_url": url, "deployment": "bench"}))
    results, done = [], 0
    for total in totals:
        take_places(url, study_id, done, total - done)
        done = total
        later = datetime.now(UTC) + timedelta(seconds=60)  # past the time a submission takes to reach us
        for which in ("first", "again"):
            before, started = calls(url), time.monotonic()
            passed = reconcile_studies(runtime.sessions, runtime.redis, account, now=later)
            seconds = time.monotonic() - started
            made = delta(calls(url), before)
            results.append({"submissions": total, "pass": which, "recorded": passed.recorded,
                            "decisions": [d.action.value for d in passed.decisions], "seconds": round(seconds, 3),
                            "calls": made, "calls_total": sum(made.values()),
                            # per 1,000 submissions listed; and per 1,000 recorded (new) on a first pass
                            "seconds_per_1000_listed": round(seconds * 1000 / total, 3),
                            "calls_per_1000_listed": round(sum(made.values()) * 1000 / total, 1),
                            "seconds_per_1000_recorded": round(seconds * 1000 / passed.recorded, 3)
                            if passed.recorded else None})
    runtime.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=10000)
    parser.add_argument("--calls-per-s", type=float, default=50.0)
    parser.add_argument("--submissions", default="1000,3000", help="totals at which the reconciler is timed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    totals = sorted(int(n) for n in args.submissions.split(","))
    if totals and totals[-1] > args.units:
        raise SystemExit("--submissions cannot exceed --units (each takes a place)")
    result: dict[str, Any] = {"provider_calls_per_s": args.calls_per_s, "load_1m_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="prolific-bench-") as scratch, \
            services(Path(scratch), args.calls_per_s) as (url, env):
        result["launch"], study_id = phase_launch(Path(scratch), url, env, args.units)
        result["reconcile"] = phase_reconcile(url, env, study_id, totals)
    result["load_1m_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
