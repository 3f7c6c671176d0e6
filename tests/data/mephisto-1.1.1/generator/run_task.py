"""Make the Mephisto 1.1.1 data directory the importer is tested on, with Mephisto 1.1.1 itself.

Run with a Python that has ``mephisto==1.1.1`` installed (see ../README.md); never part of our tests.
It launches Mephisto's static task (blueprint static_task, architect local: Mephisto's node router,
provider mock), plays three workers over the router's HTTP protocol (``POST /request_agent``, then
``POST /submit_task``, one with a file), shuts the run down (the units no worker took expire), reviews
with Mephisto's own Agent API (approve, reject, soft-reject) and grants qualifications with its Worker API.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from mephisto.abstractions.blueprints.static_html_task import static_html_task_builder
from mephisto.data_model.unit import Unit
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import task_script
from mephisto.utils.qualifications import find_or_create_qualification
from omegaconf import DictConfig

ROUTER = "http://localhost:3111"


def skip_page_bundle_build(self: static_html_task_builder.StaticHTMLTaskBuilder) -> None:
    """Mephisto 1.1.1 rebuilds its static page's bundle with npm on every launch, from a package.json
    pinning mephisto-task 2.0.3 and cypress (a downloaded binary), which this machine cannot install.
    The simulated workers speak the router's HTTP protocol and never load the page, so a placeholder
    bundle stands in; everything else Mephisto does as it ships."""
    build_dir = Path(static_html_task_builder.FRONTEND_BUILD_DIR)
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "bundle.js").write_text("/* placeholder: the page is not used */\n")


static_html_task_builder.StaticHTMLTaskBuilder.rebuild_core = skip_page_bundle_build


def request_agent(worker: str, assignment: str) -> str:
    provider_data = {"worker_name": worker, "agent_registration_id": f"{assignment}-{worker}",
                     "assignment_id": assignment, "provider_type": "mock"}
    answer = requests.post(f"{ROUTER}/request_agent", json={
        "provider_data": provider_data, "client_timestamp": time.time()}, timeout=60).json()
    print("request_agent", worker, assignment, "->", json.dumps(answer)[:300])
    return str(answer["data"]["agent_id"])


def submit(agent_id: str, outputs: dict[str, Any], upload: tuple[str, bytes] | None = None) -> None:
    if upload is None:
        response = requests.post(f"{ROUTER}/submit_task", json={
            "USED_AGENT_ID": agent_id, "final_data": outputs, "client_timestamp": time.time()}, timeout=60)
    else:
        name, data = upload
        response = requests.post(f"{ROUTER}/submit_task", data={
            "USED_AGENT_ID": agent_id, "final_string_data": json.dumps(outputs),
            "client_timestamp": str(time.time())}, files={"attachment": (name, data, "text/plain")}, timeout=60)
    print("submit_task", agent_id, response.status_code, response.text)


def completed_units(operator: Operator, run_id: str) -> int:
    return sum(unit.get_status() == "completed" for unit in operator.db.find_units(task_run_id=run_id))


def play_workers() -> None:
    # Mephisto's mock provider names its units' assignments by the mock assignment id the page sends.
    plays = [("ada", "1", {"rating": "5", "comment": "reads naturally"}, ("ada-notes.txt", b"ada's notes\n")),
             ("ben", "1", {"rating": "2", "comment": "copied the sentence"}, None),
             ("ada", "2", {"rating": "3", "comment": ""}, None),
             ("cleo", "2", {"rating": "1", "comment": "ungrammatical on purpose?"}, None)]
    for worker, assignment, outputs, upload in plays:
        submit(request_agent(worker, assignment), outputs, upload)


@task_script(default_config_file="example")
def main(operator: Operator, cfg: DictConfig) -> None:
    run_id = operator.launch_task_run(cfg.mephisto)
    # Mephisto's event loop runs only while the operator waits: the workers play from a thread meanwhile.
    workers = threading.Thread(target=play_workers, daemon=True)
    workers.start()
    assert operator._run_loop_until(lambda: completed_units(operator, run_id) >= 4 and not workers.is_alive(), 120)
    operator._run_loop_until(lambda: False, 3)
    # Shutting down expires the units no worker took (assignment 3's), then waits for the run to be
    # complete, which an unreviewed unit is not: Ctrl-C once then (its message says so) force-quits.
    threading.Timer(20, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    operator.shutdown()

    by_worker_text: dict[tuple[str, str], Unit] = {}
    for unit in operator.db.find_units(task_run_id=run_id):
        agent = unit.get_assigned_agent()
        if agent is not None and agent.get_status() == "completed":
            outputs = agent.state.get_data()["outputs"]
            # Mephisto names a sandbox worker NAME_sandbox.
            name = agent.get_worker().worker_name.replace("_sandbox", "")
            by_worker_text[(name, outputs.get("comment", ""))] = unit
    by_worker_text[("ada", "reads naturally")].get_assigned_agent().approve_work()
    by_worker_text[("ben", "copied the sentence")].get_assigned_agent().reject_work("copied the sentence")
    by_worker_text[("ada", "")].get_assigned_agent().soft_reject_work()
    # cleo's unit stays completed: not reviewed yet.

    find_or_create_qualification(operator.db, "good-annotator")
    find_or_create_qualification(operator.db, "simple-static-task-block")
    workers = {w.worker_name.replace("_sandbox", ""): w for w in operator.db.find_workers()}
    workers["ada"].grant_qualification("good-annotator", 1)
    workers["cleo"].grant_qualification("good-annotator", 3)
    workers["ben"].grant_qualification("simple-static-task-block", 1)
    for unit in operator.db.find_units(task_run_id=run_id):
        agent = unit.get_assigned_agent()
        print("unit", unit.db_id, unit.get_status(), "agent", agent and agent.db_id, agent and agent.get_status())


if __name__ == "__main__":
    os.chdir(tempfile.mkdtemp(prefix="mephisto-hydra-"))  # hydra's outputs/ folder, not in the repo
    main()
