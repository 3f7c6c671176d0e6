"""Mephisto task scripts (run_task.py) run unchanged over the compatibility layer: the config they
receive, what they may import, one-line failures naming what the layer lacks, and a real Mephisto left
untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mephisto_dist.compat.runner import capture, captured_hooks
from mephisto_dist.compat.session import ScriptRef
from mephisto_dist.errors import ConfigError
from tests.taskdirs import STATIC_SCRIPT, write_script_task_dir
from tests.test_cli_bad_input import assert_refused, run_cli, task_runs

pytestmark = pytest.mark.system

HEADER = "from mephisto.tools.scripts import task_script\n"
MAIN = '''
@task_script(default_config_file="example")
def main(operator, cfg):
    operator.launch_task_run(cfg.mephisto)

main()
'''


def script_dir(tmp_path: Path, source: str) -> Path:
    return write_script_task_dir(tmp_path, script=source, architect="mock")


def test_capture_gives_the_config_and_the_callbacks(tmp_path: Path) -> None:
    task_dir = script_dir(tmp_path, STATIC_SCRIPT)
    ref = ScriptRef(str(task_dir / "run_task.py"), None, ("num_tasks=3", "mephisto.task.task_name=renamed"))
    mephisto, shared = capture(ref)
    assert mephisto["blueprint"]["_blueprint_type"] == "static_task"
    assert mephisto["task"]["task_name"] == "renamed"
    assert mephisto["task"]["max_num_concurrent_units"] == 0  # Mephisto's default filled in
    assert shared.qualifications[0]["comparator"] == "DoesNotExist"
    hooks = captured_hooks(ref.as_dict())
    assert hooks.worker_can_do_unit is not None and hooks.on_unit_submitted is not None
    assert hooks.validate_onboarding is None  # not set by the script: no work for the web server
    assert not hooks.worker_can_do_unit("picky", {"sentence": "python sentence 0"})
    assert hooks.worker_can_do_unit("picky", {"sentence": "python sentence 2"})
    assert hooks.worker_can_do_unit("anyone", {"sentence": "python sentence 0"})
    assert not [name for name in sys.modules if name == "mephisto" or name.startswith("mephisto.")]


def test_a_config_dataclass_and_hydra_overrides(tmp_path: Path) -> None:
    task_dir = script_dir(tmp_path, '''
from dataclasses import dataclass, field
from typing import Any, List
from mephisto.operations.hydra_config import TaskConfig
from mephisto.tools.scripts import task_script

@dataclass
class MyConfig(TaskConfig):
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"conf": "example"}])
    reps: int = 2

@task_script(config=MyConfig)
def main(operator, cfg):
    assert cfg.reps == 7 and cfg.added == "yes" and cfg.task_dir.endswith("script_task"), cfg
    assert cfg.mephisto.database._database_type == "singleton"
    operator.launch_task_run(cfg.mephisto)

main()
''')
    path = str(task_dir / "run_task.py")
    mephisto, _ = capture(ScriptRef(path, None, ("reps=7", "+added=yes")))
    assert mephisto["task"]["task_name"] == "script-task"
    with pytest.raises(ConfigError, match=r"unknown key 'added'; .* and \+added=yes adds a key of your own"):
        capture(ScriptRef(path, None, ("reps=7", "added=yes")))


def test_a_real_mephisto_is_shadowed_only_while_the_script_runs(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "site" / "mephisto"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "mephisto", raising=False)
    import mephisto  # type: ignore[import-not-found]

    task_dir = script_dir(tmp_path, STATIC_SCRIPT)
    capture(ScriptRef(str(task_dir / "run_task.py")))
    assert sys.modules["mephisto"] is mephisto and mephisto.REAL
    monkeypatch.delitem(sys.modules, "mephisto")


@pytest.mark.parametrize(("source", "needles"), [
    ("from mephisto.abstractions.databases.local_database import LocalMephistoDB\n" + HEADER + MAIN,
     ("run_task.py line 1 imports mephisto.abstractions.databases.local_database",
      "compatibility layer does not provide")),
    ("from mephisto.tools.scripts import task_script, load_db_and_process_config\n" + MAIN,
     ("run_task.py line 1 imports mephisto.tools.scripts.load_db_and_process_config",)),
    (HEADER + MAIN.replace("operator.launch_task_run(cfg.mephisto)", "operator.get_running_task_runs()"),
     ("run_task.py line 5 calls Operator.get_running_task_runs", "does not provide")),
    (HEADER + MAIN.replace("operator.launch_task_run(cfg.mephisto)", "raise ValueError('no data today')"),
     ("run_task.py line 5 failed: ValueError: no data today",)),
    (HEADER + MAIN.replace("operator.launch_task_run(cfg.mephisto)", "pass"),
     ("run_task.py ran to its end without calling operator.launch_task_run",)),
    (HEADER + MAIN.replace("operator.launch_task_run(cfg.mephisto)",
                           "operator.launch_task_run(cfg.mephisto, SharedStaticTaskState(static_task_data=[1]))")
     .replace("@task_script", "from mephisto.abstractions.blueprints.abstract.static_task.static_blueprint "
                             "import SharedStaticTaskState\n@task_script"),
     ("static_task_data item 1 must be a dict",)),
])
def test_what_the_layer_lacks_fails_at_launch_naming_it(tmp_path: Path, source: str,
                                                         needles: tuple[str, ...]) -> None:
    task_dir = script_dir(tmp_path, source)
    result = run_cli(tmp_path / "data", "run", str(task_dir))
    assert_refused(result, *needles)
    assert task_runs(tmp_path / "data") == 0


def test_script_option_and_bad_override(tmp_path: Path) -> None:
    task_dir = script_dir(tmp_path, STATIC_SCRIPT)
    other = task_dir / "launch_other.py"
    other.write_text(STATIC_SCRIPT)
    (task_dir / "run_task.py").unlink()
    result = run_cli(tmp_path / "data", "run", str(task_dir), "--script", str(other), "colour=red")
    assert_refused(result, "unknown key 'colour'", "+colour=red adds a key of your own")
    result = run_cli(tmp_path / "data", "run", str(task_dir), "--script", str(other), "conf=nope")
    assert_refused(result, "config 'nope' not found")


SCREENING = ["mephisto.blueprint.use_screening_task=true", "mephisto.blueprint.passed_qualification_name=ok",
             "mephisto.blueprint.block_qualification=no"]


@pytest.mark.parametrize(("extra", "needle"), [
    (["mephisto.blueprint.max_screening_units=2"], "use_screening_task needs mephisto.task.allowed_concurrent=1"),
    (["mephisto.blueprint.max_screening_units=0", "mephisto.task.allowed_concurrent=1"],
     "max_screening_units must be above 0 with a screening_data_factory"),
    (["mephisto.task.allowed_concurrent=1"], "use_screening_task needs mephisto.blueprint.max_screening_units"),
])
def test_screening_arguments_are_checked_at_launch_as_mephisto_does(tmp_path: Path, extra: list[str],
                                                                    needle: str) -> None:
    task_dir = script_dir(tmp_path, STATIC_SCRIPT)
    assert_refused(run_cli(tmp_path / "data", "run", str(task_dir), *SCREENING, *extra), needle)
    assert task_runs(tmp_path / "data") == 0
