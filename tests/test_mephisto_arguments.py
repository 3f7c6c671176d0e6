"""Every argument Mephisto's current release defines for static_task, the local architect, the mock,
mturk, mturk_sandbox and prolific providers and mephisto.task is accepted; ``wut`` marks the ones not
carried out yet and ``run`` warns once about each such argument set to another value than its default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mephisto_dist.cli.wut import NOT_YET, argument_row
from mephisto_dist.config import get_section
from mephisto_dist.config.loader import load_task_config
from tests.taskdirs import write_task_dir

ROOT = Path(__file__).resolve().parent.parent

# Mephisto's own examples at its current release (simple_static_task's example_local_mock.yaml and the
# Prolific example) use these beside what the older examples set.
HEAD_EXTRAS = """\
  log_level: "debug"
"""


def mephisto_head_task(tmp_path: Path, provider: str = "mock") -> Path:
    task_dir = write_task_dir(tmp_path, extra_yaml=HEAD_EXTRAS)
    conf = task_dir / "hydra_configs" / "conf" / "example.yaml"
    text = conf.read_text().replace(
        "    task_source: ${task_dir}/server_files/task.html\n",
        "    task_source: ${task_dir}/server_files/task.html\n"
        "    task_source_review: ${task_dir}/webapp/build/bundle.review.js\n")
    conf.write_text(text.replace("/mephisto/provider: mock", f"/mephisto/provider: {provider}"))
    return task_dir


EVERY_ARGUMENT = {
    ("blueprint", "static_task"): [
        "task_source", "preview_source", "onboarding_source", "units_per_assignment", "extra_source_dir",
        "data_json", "data_jsonl", "data_csv", "onboarding_qualification", "block_qualification",
        "tips_location", "task_source_review", "passed_qualification_name", "max_screening_units",
        "use_screening_task", "gold_qualification_base", "max_gold_units", "use_golds", "min_golds",
        "max_incorrect_golds"],
    ("architect", "local"): ["server_type", "server_source_path", "hostname", "port"],
    ("provider", "mock"): ["requester_name"],
    ("provider", "mturk"): ["requester_name"],
    ("provider", "mturk_sandbox"): ["requester_name"],
    ("provider", "prolific"): [
        "requester_name", "prolific_external_study_url", "prolific_id_option",
        "prolific_estimated_completion_time_in_minutes", "prolific_eligibility_requirements",
        "prolific_workspace_name", "prolific_project_name", "prolific_allow_list_group_name",
        "prolific_block_list_group_name"],
    ("task", "task"): [
        "task_name", "task_title", "task_description", "task_reward", "task_tags", "task_lifetime_in_seconds",
        "assignment_duration_in_seconds", "allowed_concurrent", "maximum_units_per_worker",
        "max_num_concurrent_units", "max_assignments_per_hit", "submission_timeout", "post_install_script",
        "force_rebuild", "no_submission_patience"],
}


@pytest.mark.parametrize("kind, name", list(EVERY_ARGUMENT), ids=[f"{k}={n}" for k, n in EVERY_ARGUMENT])
def test_every_argument_of_mephistos_release_is_declared(kind: str, name: str) -> None:
    assert set(EVERY_ARGUMENT[(kind, name)]) <= set(get_section(kind, name).dests)


def test_a_task_folder_of_mephistos_current_release_loads(tmp_path: Path) -> None:
    config = load_task_config(mephisto_head_task(tmp_path), "example",
                              ["mephisto.architect.server_type=flask", "mephisto.task.max_assignments_per_hit=1"])
    assert config.blueprint["task_source_review"].endswith("webapp/build/bundle.review.js")
    # Set to something else than their defaults, and not carried out: listed once each; a default is not
    # (task_source_review is carried out: the review app renders submissions with it).
    assert config.unimplemented_settings() == ["mephisto.architect.server_type"]


def test_prolific_configs_load_with_their_arguments(tmp_path: Path) -> None:
    task_dir = mephisto_head_task(tmp_path, provider="prolific")
    config = load_task_config(task_dir, "example", [
        "mephisto.provider.prolific_id_option=url_parameters",
        "mephisto.provider.prolific_estimated_completion_time_in_minutes=7",
        "mephisto.provider.prolific_allow_list_group_name=Lab allow list"])
    assert config.provider_type == "prolific" and config.provider["prolific_workspace_name"] == "My Workspace"
    unimplemented = config.unimplemented_settings()
    assert "mephisto.provider.prolific_allow_list_group_name" not in unimplemented
    assert "mephisto.provider.prolific_estimated_completion_time_in_minutes" not in unimplemented


@pytest.mark.system
def test_wut_marks_what_is_accepted_but_not_implemented() -> None:
    static = get_section("blueprint", "static_task")
    review = static.argument("task_source_review")
    source = static.argument("task_source")
    server_type = get_section("architect", "local").argument("server_type")
    assert review is not None and source is not None and server_type is not None
    assert argument_row(server_type)[-1] == NOT_YET and argument_row(source)[-1] == "yes"
    assert argument_row(review)[-1] == "yes"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")} | {"COLUMNS": "300"}
    kinds = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "wut"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "provider: mock, mturk, mturk_sandbox, prolific, inhouse" in kinds
    table = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "wut", "architect=local"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    row = next(line for line in table.splitlines() if "│ server_type " in line)
    assert row.rstrip("│ ").endswith(NOT_YET)


@pytest.mark.system
def test_run_warns_once_per_unimplemented_argument_and_needs_a_prolific_requester(tmp_path: Path, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"), "MEPHISTO_DIST_REDIS_URL": redis_url})
    task_dir = mephisto_head_task(tmp_path / "a")
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir),
                             "mephisto.architect.server_type=flask", "--detach", "--quiet"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    tail = "is accepted but not implemented yet: its value is ignored (mephisto-dist wut lists what is)"
    assert warnings == [f"warning: mephisto.architect.server_type {tail}"]
    assert result.stdout.strip().isdigit()

    prolific = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "run",
                               str(mephisto_head_task(tmp_path / "b", provider="prolific")),
                               "mephisto.architect.port=3001", "--detach"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert prolific.returncode == 2
    assert ("requester 'prolific' is not registered for prolific; run 'mephisto-dist register prolific "
            "name=prolific api_key=...' first") in prolific.stderr, prolific.stderr
