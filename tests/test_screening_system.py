"""Screening with real processes (a Celery worker, a web server, a task script): units made from the
script's generator up to max_screening_units, a worker waits while their answer is checked, the script's
validator on Celery passes or blocks them, then real units; and screening on real units (factory False)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from mephisto_dist.db.engine import transaction
from mephisto_dist.domain.gate import NOT_QUALIFIED
from mephisto_dist.review.qualifications import granted_values
from mephisto_dist.runtime import Runtime
from mephisto_dist.work.claims import NO_UNIT_AVAILABLE
from mephisto_dist.work.screening import PENDING
from tests.conftest import wait_for
from tests.system import ROOT, celery_worker, child_env, web_server
from tests.taskdirs import write_script_task_dir
from tests.test_task_scripts_system import register, submit

pytestmark = pytest.mark.system

SCRIPT = '''\
from mephisto.abstractions.blueprints.abstract.static_task.static_blueprint import SharedStaticTaskState
from mephisto.abstractions.blueprints.mixins.screen_task_required import ScreenTaskRequired
from mephisto.tools.scripts import task_script


def screening_units():
    while True:
        yield {"sentence": "screen me"}


def validate(unit):
    return unit.get_assigned_agent().state.get_data()["outputs"]["rating"] == "5"


@task_script(default_config_file="example")
def main(operator, cfg):
    shared_state = SharedStaticTaskState(
        static_task_data=[{"sentence": f"python sentence {i}"} for i in range(3)])
    shared_state.on_unit_submitted = ScreenTaskRequired.create_validation_function(cfg.mephisto, validate)
    shared_state.screening_data_factory = FACTORY
    shared_state.qualifications += ScreenTaskRequired.get_mixin_qualifications(cfg.mephisto, shared_state)
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown()


main()
'''
SCREENING = ["mephisto.blueprint.use_screening_task=true", "mephisto.blueprint.passed_qualification_name=ok",
             "mephisto.blueprint.block_qualification=no", "mephisto.task.allowed_concurrent=1"]


def launch(tmp_path: Path, runtime: Runtime, factory: str, max_units: int) -> int:
    task_dir = write_script_task_dir(tmp_path, script=SCRIPT.replace("FACTORY", factory), architect="mock")
    result = subprocess.run(
        [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), *SCREENING,
         f"mephisto.blueprint.max_screening_units={max_units}", "--detach", "--quiet"],
        cwd=ROOT, env=child_env(runtime.settings), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def grants(runtime: Runtime, worker: str) -> dict[str, int]:
    with transaction(runtime.sessions) as session:
        worker_id = session.scalar(text("select id from worker where worker_name = :name"), {"name": worker})
        return granted_values(session, int(worker_id))


def made_units(runtime: Runtime, run_id: int) -> tuple[int, int]:
    """The run's count of (screening, gold) units made, and a check that it matches its units."""
    with transaction(runtime.sessions) as session:
        counted = session.execute(text("select screening_units_made, gold_units_made from task_run where id = :id"),
                                  {"id": run_id}).one()
        units = tuple(session.scalar(text("select count(*) from unit where task_run_id = :id and unit_index = :i"),
                                     {"id": run_id, "i": index}) for index in (-1, -2))
    assert tuple(counted) == units, (tuple(counted), units)
    return int(counted[0]), int(counted[1])


def sentence(agent: dict[str, Any]) -> str:
    assert agent["agent_id"], agent
    return str(agent["init_task_data"]["sentence"])


def test_screening_units_from_the_generator_then_real_units(tmp_path: Path, runtime: Runtime) -> None:
    run_id = launch(tmp_path, runtime, "screening_units()", 3)
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        wait_for(lambda: register(url, "probe", "p")["failure_reason"] is None, timeout_s=30,
                 message="the units to be launched")
        ann = register(url, "ann", "a1")
        assert sentence(ann) == "screen me"
        assert register(url, "ann", "a2")["failure_reason"] == PENDING  # one screening unit at a time
        submit(url, ann["agent_id"], "5")
        bob = register(url, "bob", "b1")
        assert sentence(bob) == "screen me"
        submit(url, bob["agent_id"], "1")
        # 'probe' took the first screening unit, so the cap of 3 is reached.
        assert register(url, "cy", "c1")["failure_reason"] == NO_UNIT_AVAILABLE
        # The cap is counted in the database: Redis lost (flushed) makes no fourth screening unit.
        redis.Redis.from_url(runtime.settings.effective_redis_url).flushall()
        assert register(url, "dee", "d1")["failure_reason"] == NO_UNIT_AVAILABLE
        assert made_units(runtime, run_id) == (3, 0)

        wait_for(lambda: "ok" in grants(runtime, "ann") and "no" in grants(runtime, "bob"), timeout_s=30,
                 message="the script's validator to run on Celery")
        assert grants(runtime, "ann") == {"ok": 1} and grants(runtime, "bob") == {"no": 1}
        assert sentence(register(url, "ann", "a3")) == "python sentence 0"
        assert register(url, "bob", "b2")["failure_reason"] == NOT_QUALIFIED


def test_screening_on_real_units_when_the_factory_is_false(tmp_path: Path, runtime: Runtime) -> None:
    run_id = launch(tmp_path, runtime, "False", 0)
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        first = wait_for(lambda: (a := register(url, "dan", "d1"))["agent_id"] and a, timeout_s=30,
                         message="a unit for dan")
        assert sentence(first) == "python sentence 0"  # a real unit screens him
        submit(url, first["agent_id"], "1")
        wait_for(lambda: "no" in grants(runtime, "dan"), timeout_s=30, message="dan to be screened out")
        assert register(url, "dan", "d2")["failure_reason"] == NOT_QUALIFIED
