"""Every path of Mephisto's router, answered by a real web process as Mephisto's routers answer it
(payload shapes checked), for a static_react_task run with onboarding."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mephisto_dist.providers import make_provider
from mephisto_dist.runs.launches import LaunchContext, launch_units
from mephisto_dist.runs.preparation import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from tests.system import make_runtime, web_server

BUNDLE = "/* a prebuilt bundle */ window.bundleLoaded = true;\n"


def react_task_dir(root: Path) -> Path:
    task_dir = root / "react"
    (task_dir / "hydra_configs" / "conf").mkdir(parents=True)
    (task_dir / "webapp" / "build").mkdir(parents=True)
    (task_dir / "webapp" / "build" / "bundle.js").write_text(BUNDLE)
    (task_dir / "static").mkdir()
    (task_dir / "static" / "logo.txt").write_text("logo\n")
    (task_dir / "data.json").write_text('[{"text": "first"}, {"text": "second"}]')
    (task_dir / "tips.csv").write_text("header,text\nRead twice,Read the sentence twice before rating.\n")
    (task_dir / "hydra_configs" / "conf" / "example.yaml").write_text("""#@package _global_
defaults:
  - /mephisto/blueprint: static_react_task
  - /mephisto/architect: mock
  - /mephisto/provider: mock
mephisto:
  blueprint:
    task_source: ${task_dir}/webapp/build/bundle.js
    extra_source_dir: ${task_dir}/static
    data_json: ${task_dir}/data.json
    onboarding_qualification: router-onboarded
    tips_location: ${task_dir}/tips.csv
  task:
    task_name: router-surface
    task_title: "Router surface"
    task_description: "Every path"
    task_reward: 0.1
    task_tags: "test"
""")
    return task_dir


@pytest.fixture
def runtime(tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'db.sqlite'}", redis_url)
    yield rt
    rt.close()


def agent_details(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    packet = response.json()
    assert packet["packet_type"] == "agent_details" and set(packet) >= {"subject_id", "data"}
    assert set(packet["data"]) == {"request_id", "worker_id", "agent_id", "init_task_data", "failure_reason"}
    data: dict[str, Any] = packet["data"]
    return data


def registration(worker: str, assignment: str) -> dict[str, Any]:
    """What mephisto-task's requestAgent posts: getAgentRegistration() under provider_data."""
    return {"provider_data": {"worker_name": worker, "worker_id": worker, "assignment_id": assignment,
                              "agent_registration_id": f"{assignment}-{worker}", "provider_type": "mock"},
            "client_timestamp": time.time()}


@pytest.mark.system
def test_every_router_path_answers_as_mephisto(tmp_path: Path, runtime: Runtime) -> None:
    run_id = create_run(runtime, prepare_run(react_task_dir(tmp_path), "example", [], check_port=False))
    launch_units(runtime.sessions, LaunchContext(runtime.limiter, make_provider("mock"), 60.0, 0), run_id,
                 now=datetime.now(UTC))
    with web_server(runtime.settings, run_id, tmp_path / "web.log") as url, httpx.Client(base_url=url) as http:
        assert http.get("/is_alive").json() == {"status": "Alive!"}
        stamp = http.get("/get_timestamp").json()
        assert set(stamp) == {"timestamp"} and abs(stamp["timestamp"] - time.time() * 1000) < 60_000

        for page in ("/", "/task_index"):
            index = http.get(page, params={"worker_id": "w", "assignment_id": "1"})
            assert index.status_code == 200 and "text/html" in index.headers["content-type"]
            assert '<script src="wrap_crowd_source.js"></script>' in index.text
            assert '<script src="bundle.js"></script>' in index.text
        assert http.get("/bundle.js").text == BUNDLE
        wrap = http.get("/wrap_crowd_source.js").text
        for function in ("getWorkerName", "getAssignmentId", "getAgentRegistration", "handleSubmitToProvider"):
            assert f"function {function}(" in wrap
        assert http.get("/logo.txt").text == "logo\n"  # extra_source_dir

        # What the page on mephisto-task 2.0.4 from npm sends (its libVersion) is what it must read back.
        config = http.get("/task_config.json", params={"mephisto_task_version": "2.0.3"}).json()
        assert config["task_title"] == "Router surface" and config["task_description"] == "Every path"
        assert config["mephisto_task_version"] == "2.0.3" and config["block_mobile"] is False
        assert config["tips"] == [{"header": "Read twice", "text": "Read the sentence twice before rating."}]

        onboarding = agent_details(http.post("/request_agent", json=registration("nested", "1")))
        assert onboarding["agent_id"].startswith("onboarding_") and onboarding["failure_reason"] is None
        # mephisto-task's postCompleteOnboarding: everything inside provider_data.
        nested = agent_details(http.post("/submit_onboarding", json={
            "provider_data": {"USED_AGENT_ID": onboarding["agent_id"], "onboarding_data": {"success": True}},
            "client_timestamp": time.time()}))
        assert nested["agent_id"] and not nested["agent_id"].startswith("onboarding_")
        assert nested["init_task_data"] == {"text": "first"}
        # The flat body accepted before.
        flat_start = agent_details(http.post("/request_agent", json=registration("flat", "2")))
        flat = agent_details(http.post("/submit_onboarding", json={
            "USED_AGENT_ID": flat_start["agent_id"], "onboarding_data": {"success": True}}))
        assert flat["init_task_data"] == {"text": "second"}

        agent = nested["agent_id"]
        metadata = http.post("/submit_metadata", json={"USED_AGENT_ID": agent, "client_timestamp": time.time(),
                                                       "metadata": {"tips": {"type": "tips", "header": "h",
                                                                             "text": "t"}}})
        assert metadata.json() == {"status": "Submitted Metadata!"}
        logged = http.post("/log_error", json={"USED_AGENT_ID": agent, "error_data": {"error": "boom"},
                                               "client_timestamp": time.time()})
        assert logged.json() == {"status": "Error log sent!"}
        submitted = http.post("/submit_task", json={"USED_AGENT_ID": agent, "final_data": {"rating": "good"},
                                                    "client_timestamp": time.time()})
        assert submitted.status_code == 200 and submitted.json()["status"] == "Submitted!"

        download = http.get("/download_file/bundle.js")
        assert download.status_code == 200 and download.text == BUNDLE
        assert "attachment" in download.headers["content-disposition"]
        for name in ("nope.js", "..%2Fdata.json", ".hidden"):
            assert http.get(f"/download_file/{name}").status_code == 404, name
