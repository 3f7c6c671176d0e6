"""``mephisto-dist run`` on ``mturk_sandbox`` against a real mturk-local process, attached on the
embedded default: the cap holds on MTurk's side (HITs up at once), and Ctrl-C once expires every HIT no
worker holds and waits for the held one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.mturk_local_process import client, mturk_local
from tests.system import ROOT
from tests.test_lifecycle_system import AttachedRun

pytestmark = pytest.mark.system

KEY_ID = "AKIDRUNCLITEST000001"
SECRET = "run-cli-secret-never-in-any-output-42"
PROVIDER = ["mephisto/provider=mturk_sandbox", "mephisto.provider.requester_name=lab"]


def aws_env(tmp_path: Path) -> dict[str, str]:
    return {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws" / "credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "aws" / "config"), "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}


def register_lab(tmp_path: Path, turk: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"), **aws_env(tmp_path)})
    done = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "register", "mturk_sandbox", "name=lab",
                           f"access_key_id={KEY_ID}", f"secret_access_key={SECRET}", f"endpoint_url={turk}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def hits(mturk: Any) -> list[dict[str, Any]]:
    return [h for page in mturk.get_paginator("list_hits").paginate(PaginationConfig={"PageSize": 100})
            for h in page["HITs"]]


def live(found: list[dict[str, Any]]) -> int:
    """HITs a worker could take or holds: assignable, or with an assignment pending."""
    return sum(1 for h in found if h["HITStatus"] == "Assignable" or h["NumberOfAssignmentsPending"])


def work_one(turk: str, server: str, worker_id: str, *, submit: bool = True) -> dict[str, str] | None:
    listed = httpx.get(f"{turk}/api/hits", params={"workerId": worker_id}).json()["HITs"]
    if not listed:
        return None
    accepted = httpx.post(f"{turk}/api/hits/{listed[0]['HITId']}/accept", json={"workerId": worker_id})
    if accepted.status_code != 200:
        return None  # another worker took it a moment ago
    view = accepted.json()

    def request_agent() -> dict[str, Any] | None:
        agent: dict[str, Any] = httpx.post(f"{server}/request_agent", json={"provider_data": {
            "worker_name": worker_id, "assignment_id": view["AssignmentId"], "hit_id": view["HITId"],
            "agent_registration_id": f"{view['AssignmentId']}-{worker_id}", "provider_type": "mturk_sandbox"}}).json()
        return agent if agent["data"]["agent_id"] else None

    # A HIT is listed on MTurk as soon as CreateHIT returns, a moment before its launcher records which unit
    # it hosts: a worker that quick is refused, and reloads the page, as on MTurk.
    agent = wait_for(request_agent, timeout_s=10, interval_s=0.2, message=f"our server to know HIT {view['HITId']}")
    agent_id = agent["data"]["agent_id"]
    if submit:
        assert httpx.post(f"{server}/submit_task", json={"USED_AGENT_ID": agent_id,
                                                         "final_data": {"rating": "1"}}).status_code == 200
        assert httpx.post(f"{turk}/mturk/externalSubmit", data={"assignmentId": view["AssignmentId"]},
                          headers={"accept": "application/json"}).status_code == 200
    return {"assignment_id": view["AssignmentId"], "hit_id": view["HITId"], "agent_id": agent_id}


def test_a_cap_of_5_keeps_at_most_5_hits_up_over_50_units(tmp_path: Path) -> None:
    with mturk_local(tmp_path / "turk.sqlite3", tmp_path / "turk.log") as turk:
        register_lab(tmp_path, turk)
        mturk = client(turk)
        run = AttachedRun(tmp_path, *PROVIDER, "mephisto.task.max_num_concurrent_units=5", rows=50,
                          env=aws_env(tmp_path))
        try:
            run.wait_for_output(r"launched in", timeout_s=60)
            wait_for(lambda: live(hits(mturk)) == 5, timeout_s=60, message="5 HITs up")
            most, done = 0, 0
            while done < 50:
                found = hits(mturk)
                most = max(most, live(found))
                assert live(found) <= 5, [(h["HITId"], h["HITStatus"]) for h in found]
                if work_one(turk, run.url, f"A1CAP{done % 7}X{done}") is not None:
                    done += 1
                else:
                    wait_for(lambda: live(hits(mturk)) > 0, message="a replacement HIT")
            assert most == 5
            assert run.wait(60) == 0, run.text()
        finally:
            run.kill()
        assert len(hits(mturk)) == 50 and {h["HITStatus"] for h in hits(mturk)} == {"Reviewable"}
        assert SECRET not in run.text()


def test_ctrl_c_once_expires_every_hit_no_worker_holds(tmp_path: Path) -> None:
    with mturk_local(tmp_path / "turk.sqlite3", tmp_path / "turk.log") as turk:
        register_lab(tmp_path, turk)
        mturk = client(turk)
        run = AttachedRun(tmp_path, *PROVIDER, rows=4, env=aws_env(tmp_path))
        try:
            run.wait_for_output(r"launched in", timeout_s=60)
            wait_for(lambda: live(hits(mturk)) == 4, timeout_s=60, message="4 HITs up")
            held = work_one(turk, run.url, "A1HOLDER", submit=False)
            assert held is not None
            run.interrupt()
            run.wait_for_output(r"waiting on 1 unit", timeout_s=60)
            found = {h["HITId"]: h for h in hits(mturk)}
            assert found[held["hit_id"]]["HITStatus"] == "Unassignable"
            assert sorted(h["HITStatus"] for i, h in found.items() if i != held["hit_id"]) == ["Reviewable"] * 3
            assert httpx.get(f"{turk}/api/hits").json()["HITs"] == []
            assert httpx.post(f"{run.url}/submit_task", json={"USED_AGENT_ID": held["agent_id"],
                                                              "final_data": {"rating": "2"}}).status_code == 200
            assert run.wait(60) == 0, run.text()
        finally:
            run.kill()
        assert SECRET not in run.text()
        # Nor in status, an export, the run's logs, the database or anything else of the data directory.
        env = {**run.env, **aws_env(tmp_path)}
        for command in (["status", "1"], ["export", "--run", "1", "--all"], ["requesters"], ["runs"]):
            shown = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *command], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=120, check=False)
            assert shown.returncode == 0, shown.stderr
            assert SECRET not in shown.stdout + shown.stderr and KEY_ID not in shown.stdout + shown.stderr
        for path in (tmp_path / "data").rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
