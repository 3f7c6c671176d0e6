"""Gold units with real processes (a Celery worker, a web server, a task script using Mephisto's
UseGoldUnit helpers): a new worker gets a gold first; a right answer lets them on to real units, a wrong
one (over max_incorrect_golds) refuses them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from mephisto_dist.domain.gate import NOT_QUALIFIED
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import ROOT, celery_worker, child_env, web_server
from tests.taskdirs import write_script_task_dir
from tests.test_screening_system import grants, made_units, sentence
from tests.test_task_scripts_system import register, submit

pytestmark = pytest.mark.system

SCRIPT = '''\
from mephisto.abstractions.blueprints.abstract.static_task.static_blueprint import SharedStaticTaskState
from mephisto.abstractions.blueprints.mixins.use_gold_unit import UseGoldUnit, get_gold_factory
from mephisto.tools.scripts import task_script


GOLDS = [{"sentence": "a gold sentence", "expected": "5"}]


def validate_gold(unit):
    agent = unit.get_assigned_agent()
    data = agent.state.get_data()
    return data["outputs"]["rating"] == data["inputs"]["expected"]


@task_script(default_config_file="example")
def main(operator, cfg):
    shared_state = SharedStaticTaskState(
        static_task_data=[{"sentence": f"python sentence {i}"} for i in range(3)],
        get_gold_for_worker=get_gold_factory(GOLDS),
        on_unit_submitted=UseGoldUnit.create_validation_function(cfg.mephisto, validate_gold),
    )
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown()


main()
'''
GOLDS = ["mephisto.blueprint.use_golds=true", "mephisto.blueprint.gold_qualification_base=g",
         "mephisto.blueprint.max_gold_units=5", "mephisto.blueprint.min_golds=1",
         "mephisto.blueprint.max_incorrect_golds=0", "mephisto.task.allowed_concurrent=1"]


def launch(tmp_path: Path, runtime: Runtime, overrides: list[str]) -> int:
    """``run --detach`` of the gold task script with these overrides; the new run's id."""
    task_dir = write_script_task_dir(tmp_path, script=SCRIPT, architect="mock")
    launched = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), *overrides,
                               "--detach", "--quiet"], cwd=ROOT, env=child_env(runtime.settings), capture_output=True,
                              text=True, timeout=60, check=False)
    assert launched.returncode == 0, launched.stderr
    return int(launched.stdout.strip().splitlines()[-1])


def test_a_gold_first_then_real_units_or_a_refusal(tmp_path: Path, runtime: Runtime) -> None:
    run_id = launch(tmp_path, runtime, GOLDS)
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        ann = wait_for(lambda: (a := register(url, "ann", "a1"))["agent_id"] and a, timeout_s=30,
                       message="a unit for ann")
        assert sentence(ann) == "a gold sentence"
        submit(url, ann["agent_id"], "5")
        bob = register(url, "bob", "b1")
        assert sentence(bob) == "a gold sentence"
        submit(url, bob["agent_id"], "1")
        wait_for(lambda: grants(runtime, "ann").get("g-correct-golds") == 1 and
                 grants(runtime, "bob").get("g-wrong-golds") == 1, timeout_s=30,
                 message="the script's gold validator to run on Celery")
        real = register(url, "ann", "a2")
        assert sentence(real) == "python sentence 0"
        submit(url, real["agent_id"], "2")
        assert register(url, "bob", "b2")["failure_reason"] == NOT_QUALIFIED
        wait_for(lambda: grants(runtime, "ann").get("g-completed-count") == 1, timeout_s=30,
                 message="ann's real unit to be counted")


def test_max_gold_units_is_kept_when_redis_is_lost(tmp_path: Path, runtime: Runtime) -> None:
    """The run may pay for one gold: after it, a new worker gets a real unit, also once Redis was flushed
    (the count lives on the run's row, not in a Redis pool that a flush would empty)."""
    run_id = launch(tmp_path, runtime, [o for o in GOLDS if "max_gold_units" not in o]
                    + ["mephisto.blueprint.max_gold_units=1"])
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        ann = wait_for(lambda: (a := register(url, "ann", "a1"))["agent_id"] and a, timeout_s=30,
                       message="a unit for ann")
        assert sentence(ann) == "a gold sentence"
        redis.Redis.from_url(runtime.settings.effective_redis_url).flushall()
        bob = wait_for(lambda: (a := register(url, "bob", "b1"))["agent_id"] and a, timeout_s=30,
                       message="a unit for bob once the run's pools are rebuilt")
        assert sentence(bob) == "python sentence 0"
        assert made_units(runtime, run_id) == (0, 1)
