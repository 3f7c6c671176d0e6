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
