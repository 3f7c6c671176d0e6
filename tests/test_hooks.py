"""A task folder's hooks module: bad modules are one-line errors before any TaskRun exists; with real
processes, validate_onboarding decides onboarding in the web server and on_unit_submitted runs on a real
Celery worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mephisto_dist.blueprints.hooks import load_hooks
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun, Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.errors import ConfigError
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import celery_worker, register, web_server
from tests.taskdirs import write_task_dir
from tests.test_cli_bad_input import assert_refused, run_cli, task_runs

ONBOARDING_HTML = '<p>${question}</p><input name="answer">'


def hooked_task_dir(root: Path, hooks_source: str | None, *, hooks_value: str = "${task_dir}/hooks.py",
                    onboarding: bool = False, rows: int = 1, extra_blueprint: str = "") -> Path:
    task_dir = write_task_dir(root, rows=rows, architect="mock")
    if hooks_source is not None:
        (task_dir / "hooks.py").write_text(hooks_source)
    (task_dir / "server_files" / "onboarding.html").write_text(ONBOARDING_HTML)
    conf = task_dir / "hydra_configs" / "conf" / "example.yaml"
    lines = [f"    hooks_module: {hooks_value}"]
    if onboarding:
        lines += ["    onboarding_source: ${task_dir}/server_files/onboarding.html",
                  "    onboarding_qualification: hooked-onboarding"]
    anchor = "    task_source: ${task_dir}/server_files/task.html\n"
    conf.write_text(conf.read_text().replace(anchor, anchor + "\n".join(lines) + "\n" + extra_blueprint))
    return task_dir


@pytest.mark.parametrize(("source", "hooks_value", "needles"), [
    (None, "${task_dir}/hooks.py", ("hooks_module not found", "hooks.py")),
    ("def validate_onboarding(data):\n    return data[\n", "${task_dir}/hooks.py",
     ("hooks.py line", "invalid Python")),
    ("validate_onboarding = True\n", "${task_dir}/hooks.py",
     ("validate_onboarding must be a function", "bool")),
    ("raise RuntimeError('no database here')\n", "${task_dir}/hooks.py",
     ("failed to import", "RuntimeError: no database here")),
    ("task_config = ['not', 'a', 'dict']\n", "${task_dir}/hooks.py", ("task_config must be a dict",)),
    ("", "hooks.py", ("must be an absolute path", "${task_dir}/hooks.py")),
    ("", "${task_dir}/hooks.txt", ("must name a .py file",)),
])
@pytest.mark.system
def test_a_bad_hooks_module_is_a_one_line_error_and_no_task_run(
    tmp_path: Path, source: str | None, hooks_value: str, needles: tuple[str, ...]
) -> None:
    task_dir = hooked_task_dir(tmp_path, source, hooks_value=hooks_value)
    if hooks_value.endswith(".txt"):
        (task_dir / "hooks.txt").write_text("")
    result = run_cli(tmp_path / "data", "run", str(task_dir))
    assert_refused(result, *needles)
    assert task_runs(tmp_path / "data") == 0


@pytest.mark.system
def test_bad_qualification_requirements_are_a_one_line_error(tmp_path: Path) -> None:
    task_dir = hooked_task_dir(tmp_path, "", extra_blueprint=(
        "    qualifications:\n"
        "      - {qualification_name: skill, comparator: AtLeast, value: 3}\n"))
    assert_refused(run_cli(tmp_path / "data", "run", str(task_dir)), "unknown comparator 'AtLeast'")
    assert task_runs(tmp_path / "data") == 0


def test_other_names_are_ignored_and_requirements_load_from_yaml(tmp_path: Path) -> None:
    task_dir = hooked_task_dir(tmp_path, (
        "LIMIT = 3\n"
        "def validate_onbording(data):  # a misspelt name is just another helper\n    return False\n"
        "def worker_can_do_unit(worker_name, unit_data):\n    return True\n"), extra_blueprint=(
        "    qualifications:\n"
        "      - qualification_name: skill\n        comparator: GreaterThan\n        value: 2\n"))
    prepared = prepare_run(task_dir, "example", [], check_port=False)
    assert prepared.config.blueprint["qualifications"] == [
        {"qualification_name": "skill", "comparator": "GreaterThan", "value": 2}]
    hooks = load_hooks(str(task_dir / "hooks.py"))
    assert hooks.validate_onboarding is None and hooks.on_unit_submitted is None
    assert hooks.worker_can_do_unit is not None and hooks.worker_can_do_unit("w", {})
    overridden = prepare_run(task_dir, "example", [
        "mephisto.blueprint.qualifications=[{qualification_name: x, comparator: Exists}]"], check_port=False)
    assert overridden.config.blueprint["qualifications"] == [{"qualification_name": "x", "comparator": "Exists"}]


def test_a_non_callable_hook_is_refused_by_load_hooks(tmp_path: Path) -> None:
    path = tmp_path / "hooks.py"
    path.write_text("on_unit_submitted = 'later'\n")
    with pytest.raises(ConfigError, match="on_unit_submitted must be a function"):
        load_hooks(str(path))


def launched(rt: Runtime, run_id: int) -> int:
    with transaction(rt.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Unit).where(
            Unit.task_run_id == run_id, Unit.status == UnitStatus.LAUNCHED.value)) or 0)


def onboard(url: str, worker: str, answer: str) -> dict[str, Any]:
    """Register as ``worker``, answer the onboarding; the agent_details that follows."""
    first = register(url, worker)
    assert first["agent_id"].startswith("onboarding_"), first
    response = httpx.post(url + "/submit_onboarding", json={"USED_AGENT_ID": first["agent_id"],
                                                            "onboarding_data": {"answer": answer}})
    assert response.status_code == 200, response.text
    assert response.json()["packet_type"] == "agent_details"
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.mark.system
def test_onboarding_and_on_unit_submitted_with_real_processes(tmp_path: Path, runtime: Runtime) -> None:
    record = tmp_path / "submitted.jsonl"
    hooks_source = f"""
import json, os

onboarding_data = {{"question": "What is 2 + 2?"}}
task_config = {{"instructions": "Rate honestly."}}


def validate_onboarding(onboarding_data):
    return onboarding_data.get("answer") == "4"


def on_unit_submitted(unit_data, outputs):
    with open({str(record)!r}, "a") as out:
        out.write(json.dumps({{"unit_data": unit_data, "outputs": outputs, "ppid": os.getppid()}}) + "\\n")
"""
    task_dir = hooked_task_dir(tmp_path, hooks_source, onboarding=True, rows=2)
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    with celery_worker(runtime.settings, tmp_path / "worker.log") as worker, \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(runtime, run_id)
        wait_for(lambda: launched(runtime, run_id) == 2, message="the worker to launch 2 units")
        config = httpx.get(url + "/task_config.json").json()
        assert config["instructions"] == "Rate honestly." and config["onboarding_source"] == "onboarding.html"
        bob = register(url, "bob")
        assert bob["init_task_data"] == {"question": "What is 2 + 2?", "html": "onboarding.html"}

        # Fails onboarding: refused now and on any later registration.
        failed = onboard(url, "bob", "5")
        assert failed["agent_id"] is None
        assert "did not pass the qualification" in failed["failure_reason"]
        assert "did not pass the qualification" in register(url, "bob", "a2")["failure_reason"]

        # Passes: the answer is the next agent, a real unit, in the same exchange.
        for worker_name, rating in (("alice", "5"), ("carol", "2")):
            unit_agent = onboard(url, worker_name, "4")
            assert unit_agent["agent_id"] and not unit_agent["agent_id"].startswith("onboarding_")
            assert unit_agent["init_task_data"]["sentence"].startswith("sentence number")
            submitted = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": unit_agent["agent_id"],
                                                               "final_data": {"rating": rating}})
            assert submitted.status_code == 200, submitted.text

        lines = wait_for(lambda: record.exists() and len(record.read_text().splitlines()) == 2 and
                         record.read_text().splitlines(), timeout_s=20,
                         message="on_unit_submitted to run on the Celery worker for both units")
        hooked = sorted((json.loads(line) for line in lines), key=lambda h: h["outputs"]["rating"])
        assert [h["outputs"] for h in hooked] == [{"rating": "2"}, {"rating": "5"}]
        assert {h["unit_data"]["sentence"] for h in hooked} == {"sentence number 0", "sentence number 1"}
        assert all(h["unit_data"]["html"] == "task.html" for h in hooked)
        assert all(h["ppid"] == worker.pid for h in hooked), "the hook ran outside the Celery worker"

        def completed() -> bool:
            with transaction(runtime.sessions) as session:
                run = session.get(TaskRun, run_id)
                return bool(run and run.is_completed)

        # With a hook, the Celery task (not the web server) closes the run, after running it.
        wait_for(completed, timeout_s=20, message="the worker to close the run")
