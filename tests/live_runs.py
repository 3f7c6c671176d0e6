"""Remote procedure runs built straight in the database, with a hooks file whose functions tests call."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from mephisto_dist.blueprints import remote_procedure
from mephisto_dist.db.engine import transaction
from mephisto_dist.providers import make_provider
from mephisto_dist.runs.launches import LaunchContext, launch_units
from mephisto_dist.runs.task_runs import NewRun, create_task_run
from mephisto_dist.runtime import Runtime

FUNCTIONS = '''
import os, pathlib, signal, time

def echo(request_id, args, agent_state):
    return {"echo": args, "row": agent_state.init_data, "worker": os.environ.get("LIVE_TEST_WORKER", "?"),
            "previous": sorted(r.target for r in agent_state.requests.values())}

def slow(request_id, args, agent_state):
    marks = os.environ.get("LIVE_TEST_MARKS")
    if marks:
        (pathlib.Path(marks) / request_id).write_text(os.environ.get("LIVE_TEST_WORKER", "?"))
    time.sleep(float(args.get("seconds", 0.2)))
    return {"worker": os.environ.get("LIVE_TEST_WORKER", "?")}

def boom(request_id, args, agent_state):
    raise ValueError("secret internals " + request_id)

def die(request_id, args, agent_state):
    os.kill(os.getpid(), signal.SIGKILL)

def forever(request_id, args, agent_state):
    while True:
        time.sleep(3600)

def stubborn(request_id, args, agent_state):
    # Swallows the worker's soft time limit (and anything else) and goes on: only a kill stops it.
    while True:
        try:
            time.sleep(3600)
        except BaseException:
            pass

function_registry = {"echo": echo, "slow": slow, "boom": boom, "die": die, "forever": forever,
                     "stubborn": stubborn}
onboarding_data = {"question": "What is 2 + 2?"}
'''


def make_remote_run(rt: Runtime, root: Path, *, assignments: int = 3, cap: int = 0,
                    task_name: str = "live-test", duration_s: int = 1800, onboarding: str | None = None) -> int:
    hooks = root / "hooks.py"
    hooks.write_text(FUNCTIONS)
    rows = [{"index": i, "text": f"item {i}"} for i in range(assignments)]
    bundle = root / "bundle.js"
    bundle.write_text("/* the page is not used by these tests */\n")
    blueprint = {"_blueprint_type": remote_procedure.NAME, "hooks_module": str(hooks), "task_source": str(bundle)}
    if onboarding is not None:
        blueprint["onboarding_qualification"] = onboarding
    new = NewRun(
        task_name=task_name, blueprint_type=remote_procedure.NAME, architect_type="mock", provider_type="mock",
        requester_name="mock_requester", sandbox=True,
        config={"task_dir": str(root), "conf_name": "test",
                "task": {"task_name": task_name, "task_title": "t", "task_description": "d", "task_reward": 0.5,
                         "task_tags": "test", "max_num_concurrent_units": cap,
                         "assignment_duration_in_seconds": duration_s},
                "architect": {"_architect_type": "mock"}, "provider": {"_provider_type": "mock"},
                "blueprint": blueprint},
        task_dir=str(root), build_dir=str(root), server_url="http://localhost:3000",
        max_concurrent_units=cap, units_per_assignment=1, pay_amount=0.5,
        assignment_data=[remote_procedure.init_task_data(row, blueprint) for row in rows])
    now = datetime.now(UTC)
    with transaction(rt.sessions) as session:
        run_id = create_task_run(session, new, now=now)
    launch_units(rt.sessions, LaunchContext(rt.limiter, make_provider("mock"), rt.settings.lease_ttl_s, 0),
                 run_id, now=now)
    return run_id


def request_agent(base_url: str, worker: str, ref: str = "a") -> dict[str, Any]:
    body = {"provider_data": {"worker_name": worker, "assignment_id": ref,
                              "agent_registration_id": f"{ref}-{worker}", "provider_type": "mock"}}
    answer = httpx.post(base_url + "/request_agent", json=body, timeout=10)
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()["data"]
    return data
