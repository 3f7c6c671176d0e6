"""Writing small Mephisto-format task folders for tests."""

from __future__ import annotations

from pathlib import Path

TASK_HTML = """<p id="sentence">${sentence}</p>
<select name="rating"><option value="1">1</option><option value="5">5</option></select>
<input type="file" name="evidence">
"""


def write_task_dir(root: Path, *, rows: int = 3, port: int = 3000, architect: str = "local",
                   task_name: str = "test-task", cap: int = 0, csv_text: str | None = None,
                   extra_yaml: str = "") -> Path:
    task_dir = root / "task"
    (task_dir / "hydra_configs" / "conf").mkdir(parents=True, exist_ok=True)
    (task_dir / "server_files").mkdir(exist_ok=True)
    (task_dir / "server_files" / "task.html").write_text(TASK_HTML)
    if csv_text is None:
        csv_text = "sentence\n" + "".join(f"sentence number {i}\n" for i in range(rows))
    (task_dir / "data.csv").write_text(csv_text)
    (task_dir / "hydra_configs" / "conf" / "example.yaml").write_text(f"""# @package _global_
defaults:
  - /mephisto/blueprint: static_task
  - /mephisto/architect: {architect}
  - /mephisto/provider: mock
mephisto:
  blueprint:
    data_csv: ${{task_dir}}/data.csv
    task_source: ${{task_dir}}/server_files/task.html
  architect:
    port: {port}
  task:
    task_name: {task_name}
    task_title: "Test task"
    task_description: "A test task"
    task_tags: "test"
    task_reward: 0.25
    max_num_concurrent_units: {cap}
{extra_yaml}""")
    return task_dir


STATIC_SCRIPT = '''\
from omegaconf import DictConfig

from mephisto.abstractions.blueprints.abstract.static_task.static_blueprint import SharedStaticTaskState
from mephisto.data_model.qualification import QUAL_NOT_EXIST
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import task_script
from mephisto.utils.qualifications import make_qualification_dict


@task_script(default_config_file="example")
def main(operator: Operator, cfg: DictConfig) -> None:
    picky = set(cfg.picky_workers)

    def worker_can_do_unit(worker, unit):
        # A closure over the script's config: picky workers only take the last sentence.
        sentence = unit.get_assignment_data().shared["sentence"]
        return worker.worker_name not in picky or sentence.endswith(str(cfg.num_tasks - 1))

    def on_unit_submitted(unit):
        agent = unit.get_assigned_agent()
        if agent.state.get_data()["outputs"]["rating"] == "5":
            agent.get_worker().grant_qualification("gave-five", 1)

    shared_state = SharedStaticTaskState(
        static_task_data=({"sentence": f"python sentence {i}"} for i in range(cfg.num_tasks)),
        worker_can_do_unit=worker_can_do_unit,
        on_unit_submitted=on_unit_submitted,
    )
    shared_state.qualifications = [make_qualification_dict("banned", QUAL_NOT_EXIST, None)]
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
'''


def write_script_task_dir(root: Path, *, script: str = STATIC_SCRIPT, port: int = 3000, architect: str = "local",
                          task_name: str = "script-task") -> Path:
    """A Mephisto 1.x task folder with a run_task.py (data from Python) and a YAML config without data."""
    task_dir = root / "script_task"
    (task_dir / "hydra_configs" / "conf").mkdir(parents=True, exist_ok=True)
    (task_dir / "server_files").mkdir(exist_ok=True)
    (task_dir / "server_files" / "task.html").write_text(TASK_HTML)
    (task_dir / "run_task.py").write_text(script)
    (task_dir / "hydra_configs" / "conf" / "example.yaml").write_text(f"""# @package _global_
defaults:
  - /mephisto/blueprint: static_task
  - /mephisto/architect: {architect}
  - /mephisto/provider: mock
picky_workers: [picky]
mephisto:
  blueprint:
    task_source: ${{task_dir}}/server_files/task.html
  architect:
    port: {port}
  task:
    task_name: {task_name}
    task_title: "Script task"
    task_description: "A task launched by run_task.py"
    task_tags: "test"
    task_reward: 0.25
""")
    return task_dir
