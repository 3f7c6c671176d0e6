"""Prometheus metrics: recorded by every web and worker process of a machine into one folder, served on a
listener of their own, and the deployment's figures there are the ones ``status`` prints."""

from __future__ import annotations

import http.server
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.queue import RECONCILE_POOLS
from mephisto_dist.runs.launches import run_pool
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import free_port, wait_for
from tests.system import ROOT, celery_worker, child_env, make_runtime, stop
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

CAP = 3


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    yield rt
    rt.close()


def start_web(runtime: Runtime, log: Path, run_id: int, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", "web", "--run", str(run_id),
                                    "--port", str(port), *args], cwd=ROOT, env=child_env(runtime.settings),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/task_config.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout_s=30, message="the web server")
    return process, url


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def register(url: str, worker: str) -> dict[str, object]:
    response = httpx.post(url + "/request_agent", json={
        "provider_data": {"worker_name": worker, "assignment_id": f"a-{worker}",
                          "agent_registration_id": f"a-{worker}-{worker}", "provider_type": "mock"}})
    data: dict[str, object] = response.json()["data"]
    return data


def test_metrics_count_every_process_and_match_status(tmp_path: Path, runtime: Runtime) -> None:
    task_dir = write_task_dir(tmp_path, rows=6, architect="mock", cap=CAP)
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    with celery_worker(runtime.settings, tmp_path / "worker.log"):
        first, url = start_web(runtime, tmp_path / "web1.log", run_id, "--metrics-port", str(metrics_port))
        # A second web process of the same machine: the listener is taken, so it only records.
        second, url2 = start_web(runtime, tmp_path / "web2.log", run_id, "--metrics-port", str(metrics_port))
        try:
            enqueue_launch(runtime, run_id)
            wait_for(lambda: runtime.limiter.held(run_pool(run_id)) == CAP, message="the first units to launch")
            agents = [register(url if n % 2 else url2, f"w{n}")["agent_id"] for n in range(CAP)]
            assert all(agents)
            refused = register(url2, "late")
            assert refused["agent_id"] is None
            for agent_id in agents[:2]:
                assert httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": {}}).json()[
                    "status"] == "Submitted!"
            assert httpx.post(url2 + "/submit_task", json={"USED_AGENT_ID": agents[0], "final_data": {}}).json()[
                "status"] == "Already submitted"
            wait_for(lambda: runtime.limiter.held(run_pool(run_id)) == CAP, message="the freed slots to refill")

            runtime.queue.enqueue(RECONCILE_POOLS)  # what beat sends; the worker records the recount
            samples = wait_for(lambda: (s := scrape(metrics_url)) and sample(
                s, "mephisto_dist_reconciler_actions_total", action="pool_recounted") >= 1 and s,
                timeout_s=20, message="the worker to recount the pools")
            assert sample(samples, "mephisto_dist_request_seconds_count", endpoint="/request_agent") == CAP + 1
            assert sample(samples, "mephisto_dist_request_seconds_count", endpoint="/submit_task") == 3
            assert sample(samples, "mephisto_dist_refusals_total", reason="no_unit_available") == 1
            assert sample(samples, "mephisto_dist_submissions_total", outcome="first") == 2
            assert sample(samples, "mephisto_dist_submissions_total", outcome="repeat") == 1
            assert sample(samples, "mephisto_dist_celery_tasks_total", task="mephisto_dist.launch_units",
                          outcome="success") >= 1
            assert sample(samples, "mephisto_dist_provider_calls_total", provider="MockProvider", call="publish",
                          outcome="ok") == CAP + 2
            # Every series the Grafana dashboard plots is one this listener serves.
            dashboard = (ROOT / "infra" / "grafana" / "mephisto-dist.json").read_text()
            served = {name for name, _ in samples}
            assert set(re.findall(r"mephisto_dist_[a-z_]+", dashboard)) <= served
            # The worker-facing port serves no metrics.
            assert "mephisto_dist_request_seconds" not in httpx.get(url + "/metrics").text

            status = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "status", str(run_id)],
                                    env={**child_env(runtime.settings), "COLUMNS": "250"}, capture_output=True,
                                    text=True, timeout=60, check=True).stdout
            counts = status_counts(status)
            for name, count in counts.items():
                assert sample(samples, "mephisto_dist_units", run=str(run_id), status=name) == count, name
            assert counts["completed"] == 2 and counts["assigned"] == 1 and counts["launched"] == 2
            held, cap = re.search(r"concurrency pool: (\d+) held of (\d+)", status).groups()  # type: ignore[union-attr]
            pool = run_pool(run_id)
            assert sample(samples, "mephisto_dist_tokens_held", pool=pool, run=str(run_id)) == int(held) == CAP
            assert sample(samples, "mephisto_dist_token_cap", pool=pool, run=str(run_id)) == int(cap) == CAP
        finally:
            stop(first)
            stop(second)


def status_counts(output: str) -> dict[str, int]:
    """The units per status ``status`` prints on one line (``units: launched 2 · assigned 1 · ...``), with
    every status it leaves out at 0."""
    line = next(line for line in output.splitlines() if line.startswith("units: "))
    shown = dict(part.rsplit(" ", 1) for part in line.removeprefix("units: ").split(" · "))
    return {status.value: int(shown.get(status.value, 0)) for status in UnitStatus if status != UnitStatus.MIXED}


def test_a_standing_by_web_process_takes_the_listener_over_when_its_holder_dies(tmp_path: Path,
                                                                                 runtime: Runtime) -> None:
    task_dir = write_task_dir(tmp_path, rows=2, architect="mock")
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    metrics_url = f"http://127.0.0.1:{(metrics_port := free_port())}"
    first, url = start_web(runtime, tmp_path / "web1.log", run_id, "--metrics-port", str(metrics_port))
    second, url2 = start_web(runtime, tmp_path / "web2.log", run_id, "--metrics-port", str(metrics_port))
    try:
        assert httpx.get(url + "/task_config.json").status_code == 200
        before = sample(scrape(metrics_url), "mephisto_dist_request_seconds_count", endpoint="/task_config.json")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)

        def served_again() -> bool:
            try:
                return httpx.get(metrics_url + "/metrics", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(served_again, timeout_s=20, message="the second web process to take the listener over")
        assert second.poll() is None
        assert httpx.get(url2 + "/task_config.json").status_code == 200
        # The dead process's counts stay (its files are kept), the survivor's are added to them.
        after = sample(scrape(metrics_url), "mephisto_dist_request_seconds_count", endpoint="/task_config.json")
        assert after == before + 1
        assert "took over" in (tmp_path / "web2.log").read_text()
    finally:
        stop(first)
        stop(second)


def test_the_metrics_port_cannot_be_the_worker_facing_port(tmp_path: Path, runtime: Runtime) -> None:
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "web", "--port", str(port),
                             "--metrics-port", str(port)], env={**child_env(runtime.settings), "COLUMNS": "250"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "is the worker-facing port" in result.stderr


def test_the_metrics_port_cannot_be_the_balancers_port_either(runtime: Runtime) -> None:
    port, public = free_port(), free_port()
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "web", "--port", str(port),
                             "--public-port", str(public), "--metrics-port", str(public)],
                            env={**child_env(runtime.settings), "COLUMNS": "250"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "is the worker-facing port" in result.stderr


def test_a_metrics_port_another_program_holds_is_refused(runtime: Runtime) -> None:
    """A port in use by something that is not a metrics listener is not mistaken for a sibling's
    listener to stand by for: the process says the port is taken and stops."""
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "web", "--port", str(free_port()),
                                 "--metrics-port", str(other.server_address[1])],
                                env={**child_env(runtime.settings), "COLUMNS": "250"},
                                capture_output=True, text=True, timeout=60, check=False)
    finally:
        other.shutdown()
        other.server_close()
    assert result.returncode == 2, result.stderr
    assert "another program (not a metrics listener) uses that port" in result.stderr


def test_the_metrics_command_serves_the_machines_figures(tmp_path: Path, runtime: Runtime) -> None:
    """``mephisto-dist metrics``: a listener of its own for a machine without a web process (workers only)."""
    task_dir = write_task_dir(tmp_path, rows=4, architect="mock", cap=2)
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    port = free_port()
    env = {**child_env(runtime.settings), "MEPHISTO_DIST_METRICS_PORT": str(port)}
    log = tmp_path / "metrics.log"
    with log.open("ab") as out:
        listener = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", "metrics"], cwd=ROOT, env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def served() -> bool:
            assert listener.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(served, timeout_s=30, message="the metrics listener")
        with celery_worker(runtime.settings, tmp_path / "worker.log"):
            enqueue_launch(runtime, run_id)
            wait_for(lambda: sample(scrape(f"http://127.0.0.1:{port}"), "mephisto_dist_celery_tasks_total",
                                    task="mephisto_dist.launch_units", outcome="success") == 1,
                     timeout_s=30, message="the worker's task outcome to be served")
        samples = scrape(f"http://127.0.0.1:{port}")
        assert sample(samples, "mephisto_dist_units", run=str(run_id), status="launched") == 2
        assert sample(samples, "mephisto_dist_units", run=str(run_id), status="created") == 2
        assert sample(samples, "mephisto_dist_tokens_held", pool=run_pool(run_id), run=str(run_id)) == 2
    finally:
        stop(listener)
