"""The typed run config: parsed from what a run stores, every default the argument tables' own."""

from __future__ import annotations

from pathlib import Path

from mephisto_dist.config.arguments import LOCAL_ARCHITECT, STATIC_TASK, TASK_RUN
from mephisto_dist.config.loader import load_task_config
from mephisto_dist.config.run_config import UNPAID, RunConfig, declared_default
from tests.taskdirs import write_task_dir


def test_a_stored_task_config_parses_to_its_values(tmp_path: Path) -> None:
    task_dir = write_task_dir(tmp_path, port=3456, cap=7)
    loaded = load_task_config(task_dir, "example", ["mephisto.task.allowed_concurrent=2",
                                                    "mephisto.blueprint.block_qualification=blocked"])
    stored = {**loaded.as_dict(), "script": {"path": "run_task.py"}, "tips": [{"header": "h", "text": "t"}]}
    parsed = RunConfig.parse(stored)
    assert parsed.blueprint.blueprint_type == loaded.blueprint_type
    assert parsed.blueprint.block_qualification == "blocked"
    assert parsed.architect.port == 3456
    assert parsed.task.max_num_concurrent_units == 7 and parsed.task.allowed_concurrent == 2
    assert parsed.task.task_name == loaded.task["task_name"]
    assert parsed.task.task_reward == loaded.task["task_reward"]
    assert parsed.task.assignment_duration_s == loaded.task["assignment_duration_in_seconds"]
    assert parsed.provider.args == stored["provider"] and parsed.task.args == stored["task"]
    assert parsed.script == {"path": "run_task.py"} and parsed.tips == ({"header": "h", "text": "t"},)
    assert parsed.launch_args() == {**stored["task"], "qualifications": [], "block_qualification": "blocked"}


def test_a_config_missing_keys_gets_the_declared_defaults() -> None:
    for stored in (None, {}, {"task": {}, "architect": {}, "provider": {}, "blueprint": {}}):
        parsed = RunConfig.parse(stored)
        assert parsed.blueprint.blueprint_type == STATIC_TASK.name
        assert parsed.blueprint.units_per_assignment == declared_default(STATIC_TASK, "units_per_assignment")
        assert parsed.architect.port == declared_default(LOCAL_ARCHITECT, "port")
        assert parsed.task.task_reward == UNPAID
        assert parsed.task.task_lifetime_s == declared_default(TASK_RUN, "task_lifetime_in_seconds")
        assert parsed.task.no_submission_patience_s == declared_default(TASK_RUN, "no_submission_patience")
        assert parsed.task.allowed_concurrent == 0 and parsed.task.maximum_units_per_worker == 0
        assert parsed.script is None and parsed.tips == ()
