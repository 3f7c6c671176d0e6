"""Loading Mephisto task-folder configs: defaults, interpolation, overrides, round trip, every error."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest

from mephisto_dist.config import MISSING, TaskConfig, get_section, sections
from mephisto_dist.config.arguments import KINDS
from mephisto_dist.config.loader import load_task_config
from mephisto_dist.config.task_config import coerce
from mephisto_dist.errors import ConfigError

EXAMPLE = """\
# @package _global_
defaults:
  - /mephisto/blueprint: static_task
  - /mephisto/architect: local
  - /mephisto/provider: mock
  - _self_
mephisto:
  blueprint:
    data_csv: ${task_dir}/data.csv
    task_source: ${task_dir}/server_files/demo_task.html
    preview_source: ${task_dir}/server_files/demo_preview.html
    extra_source_dir: ${task_dir}/server_files/extra_refs
    units_per_assignment: 1
  task:
    task_name: html-static-task-example
    task_title: "Rate a sentence"
    task_description: "Rate how natural a sentence sounds."
    task_reward: 0.3
    task_tags: "static,task,testing"
    max_num_concurrent_units: 0
"""


def write_conf(folder: Path, text: str, name: str = "example") -> Path:
    path = folder / "hydra_configs" / "conf" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def edited(old: str, new: str) -> str:
    assert old in EXAMPLE
    return EXAMPLE.replace(old, new)


def load_error(folder: Path, *overrides: str, conf: str = "example") -> str:
    with pytest.raises(ConfigError) as caught:
        load_task_config(folder, conf, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    task_dir = tmp_path / "task"
    write_conf(task_dir, EXAMPLE)
    return task_dir


# -- a valid config ----------------------------------------------------------------------------------


def test_loads_choices_values_and_defaults(folder: Path) -> None:
    config = load_task_config(folder)

    assert config.task_dir == folder.resolve()
    assert config.conf_name == "example"
    assert (config.blueprint_type, config.architect_type, config.provider_type) == ("static_task", "local", "mock")
    assert config.blueprint["task_source"] == f"{folder}/server_files/demo_task.html"
    assert config.blueprint["data_csv"] == f"{folder}/data.csv"
    assert config.blueprint["onboarding_source"] is None
    assert config.blueprint["units_per_assignment"] == 1
    assert config.architect == {"server_type": "node", "server_source_path": None, "hostname": "localhost",
                                "port": 3000}
    # The mock provider's rehearsal knobs (a remote marketplace's latency and faults) default to off.
    assert config.provider == {"requester_name": "MOCK_REQUESTER", "publish_latency_s": 0.0, "publish_log": "",
                               "fault": ""}
    assert config.task["task_reward"] == 0.3
    assert config.task["assignment_duration_in_seconds"] == 1800
    assert config.task["submission_timeout"] == 600
    assert config.task["allowed_concurrent"] == 0
    for kind in ("blueprint", "architect", "provider", "task"):
        section = get_section(kind, getattr(config, f"{kind}_type", "task"))
        assert set(getattr(config, kind)) == set(section.dests)


def test_relative_task_dir_and_yaml_suffix(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder.parent)
    config = load_task_config("task", "example.yaml")
    assert config.task_dir == folder.resolve()
    assert config.conf_name == "example"


def test_other_interpolations_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTER", "alice_sandbox")
    write_conf(tmp_path, edited("  task:\n", """\
  provider:
    requester_name: ${oc.env:REQUESTER}
  task:
""").replace('task_title: "Rate a sentence"', "task_title: ${mephisto.task.task_name} (${num_tasks})")
        + "num_tasks: 5\n")
    config = load_task_config(tmp_path)
    assert config.provider["requester_name"] == "alice_sandbox"
    assert config.task["task_title"] == "html-static-task-example (5)"


def test_other_top_level_keys_are_ignored(tmp_path: Path) -> None:
    write_conf(tmp_path, EXAMPLE + """\
hydra:
  run:
    dir: ${hydra:runtime.cwd}/outputs
  job:
    chdir: false
my_script_setting: [1, 2]
task_dir: /somewhere/else
""")
    config = load_task_config(tmp_path)
    assert config.blueprint["data_csv"] == f"{tmp_path}/data.csv"


def test_defaults_without_self_and_mephisto_extras(tmp_path: Path) -> None:
    write_conf(tmp_path, edited("  - _self_\n", "").replace("mephisto:\n", """\
mephisto:
  log_level: debug
  database:
    _database_type: singleton
"""))
    assert load_task_config(tmp_path).architect_type == "local"


def test_overrides_values_and_group_choices(folder: Path) -> None:
    config = load_task_config(folder, overrides=[
        "mephisto.task.max_num_concurrent_units=50",
        "mephisto.blueprint.units_per_assignment=2",
        "mephisto/architect=mock",
        "mephisto.architect.should_run_server=true",
        "mephisto/provider=mturk_sandbox",
        "mephisto.provider.requester_name='bob_sandbox'",
        "mephisto.task.task_title=\"Rate: 3 sentences\"",
        "+mephisto.blueprint.onboarding_qualification=passed-onboarding",
        "mephisto.blueprint.data_csv=${task_dir}/more.csv",
        "hydra.job.chdir=true",
        "hydra/job_logging=disabled",
    ])
    assert config.task["max_num_concurrent_units"] == 50
    assert config.blueprint["units_per_assignment"] == 2
    assert config.architect_type == "mock"
    assert config.architect == {"server_type": "node", "server_source_path": None, "should_run_server": True,
                                "port": 3000}
    assert config.provider_type == "mturk_sandbox"
    assert config.provider["requester_name"] == "bob_sandbox"
    assert config.task["task_title"] == "Rate: 3 sentences"
    assert config.blueprint["onboarding_qualification"] == "passed-onboarding"
    assert config.blueprint["data_csv"] == f"{folder}/more.csv"


def test_values_are_coerced_to_the_declared_type(folder: Path) -> None:
    config = load_task_config(folder, overrides=[
        "mephisto.task.task_tags=123",
        "mephisto.task.task_reward=1",
        "mephisto.architect.port='3001'",
        "mephisto.task.force_rebuild=True",
    ])
    assert config.task["task_tags"] == "123"
    assert config.task["task_reward"] == 1.0 and isinstance(config.task["task_reward"], float)
    assert config.architect["port"] == 3001
    assert config.task["force_rebuild"] is True


def test_as_dict_from_dict_round_trip(folder: Path) -> None:
    config = load_task_config(folder, overrides=["mephisto/architect=mock"])
    stored = json.loads(json.dumps(config.as_dict()))

    assert stored["blueprint"]["_blueprint_type"] == "static_task"
    assert stored["architect"]["_architect_type"] == "mock"
    assert stored["provider"]["_provider_type"] == "mock"
    assert stored["task"]["task_name"] == "html-static-task-example"
    assert TaskConfig.from_dict(stored) == config


def test_from_dict_fills_new_defaults_and_validates(folder: Path) -> None:
    stored = load_task_config(folder).as_dict()
    del stored["task"]["submission_timeout"]
    assert TaskConfig.from_dict(stored).task["submission_timeout"] == 600

    wrong = copy.deepcopy(stored)
    wrong["architect"]["_architect_type"] = "heroku"
    with pytest.raises(ConfigError, match=r"unknown architect 'heroku'; known: local, ec2, mock"):
        TaskConfig.from_dict(wrong)
    wrong = copy.deepcopy(stored)
    wrong["task"]["task_reward"] = "lots"
    with pytest.raises(ConfigError, match=r"'mephisto.task.task_reward': 'lots' \(expected float\)"):
        TaskConfig.from_dict(wrong)
    with pytest.raises(ConfigError, match="no 'task_dir'"):
        TaskConfig.from_dict({k: v for k, v in stored.items() if k != "task_dir"})


# -- errors ------------------------------------------------------------------------------------------


def test_task_folder_missing(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nope") == f"task folder not found: {tmp_path / 'nope'}"


def test_conf_missing_lists_available(folder: Path) -> None:
    write_conf(folder, EXAMPLE, name="other")
    expected = folder / "hydra_configs" / "conf" / "prod.yaml"
    assert load_error(folder, conf="prod") == (
        f"config 'prod' not found: expected {expected} (available: example, other)"
    )


def test_conf_missing_without_conf_folder(tmp_path: Path) -> None:
    assert load_error(tmp_path).endswith("(available: none)")


def test_yaml_that_does_not_parse_names_file_and_line(tmp_path: Path) -> None:
    path = write_conf(tmp_path, edited("    units_per_assignment: 1\n", "    units_per_assignment: [1\n"))
    message = load_error(tmp_path)
    assert message.startswith(f"{path} line ")
    assert "invalid YAML" in message


def test_yaml_duplicate_key_names_the_line(tmp_path: Path) -> None:
    path = write_conf(tmp_path, edited("    task_reward: 0.3\n", "    task_reward: 0.3\n    task_reward: 0.4\n"))
    assert load_error(tmp_path) == f"{path} line 19: invalid YAML (found duplicate key task_reward)"


def test_unknown_blueprint_in_defaults(tmp_path: Path) -> None:
    path = write_conf(tmp_path, edited("blueprint: static_task", "blueprint: mock_blueprint"))
    assert load_error(tmp_path) == ("unknown blueprint 'mock_blueprint'; known: static_task, static_react_task, "
                                    f"remote_procedure, parlai_chat (in {path})")


def test_unknown_architect_and_provider_in_override(folder: Path) -> None:
    assert load_error(folder, "mephisto/architect=heroku") == (
        "unknown architect 'heroku'; known: local, ec2, mock (from override 'mephisto/architect=heroku')"
    )
    assert "unknown provider 'crowdflower'; known: mock, mturk, mturk_sandbox, prolific" in load_error(
        folder, "mephisto/provider=crowdflower")


def test_group_override_can_fix_the_file(tmp_path: Path) -> None:
    write_conf(tmp_path, edited("architect: local", "architect: heroku"))
    assert load_task_config(tmp_path, overrides=["mephisto/architect=local"]).architect_type == "local"


def test_no_provider_chosen(tmp_path: Path) -> None:
    write_conf(tmp_path, edited("  - /mephisto/provider: mock\n", ""))
    assert "no provider chosen: add '/mephisto/provider: mock'" in load_error(tmp_path)
    assert load_task_config(tmp_path, overrides=["mephisto/provider=mock"]).provider_type == "mock"


def test_unknown_config_group(tmp_path: Path) -> None:
    write_conf(tmp_path, edited("  - _self_\n", "  - /mephisto/database: sqlite\n"))
    assert "unknown config group 'mephisto/database'" in load_error(tmp_path)


def test_unknown_key_in_file_suggests_closest(tmp_path: Path) -> None:
    path = write_conf(tmp_path, edited("max_num_concurrent_units", "max_num_concurent_units"))
    assert load_error(tmp_path) == (
        "unknown key 'mephisto.task.max_num_concurent_units'; "
        f"did you mean 'mephisto.task.max_num_concurrent_units'? (in {path})"
    )


def test_misplaced_key_points_at_its_section(tmp_path: Path) -> None:
    write_conf(tmp_path, edited("    units_per_assignment: 1\n", "    task_reward: 1\n"))
    assert "did you mean 'mephisto.task.task_reward'?" in load_error(tmp_path)


def test_unknown_key_in_override_suggests_closest(folder: Path) -> None:
    message = load_error(folder, "mephisto.task.max_num_concurent_units=50")
    assert message.startswith(
        "unknown key 'mephisto.task.max_num_concurent_units'; "
        "did you mean 'mephisto.task.max_num_concurrent_units'?"
    )
    assert "from override 'mephisto.task.max_num_concurent_units=50'" in message


def test_unknown_section_suggests_closest(folder: Path) -> None:
    assert "did you mean 'mephisto.task.task_name'?" in load_error(folder, "mephisto.taks.task_name=x")


def test_argument_of_another_architect(folder: Path) -> None:
    assert "'should_run_server' is an argument of architect 'mock', not 'local'" in load_error(
        folder, "mephisto.architect.should_run_server=true")


def test_plus_override_of_unknown_key(folder: Path) -> None:
    assert load_error(folder, "+mephisto.x=y").startswith("unknown key 'mephisto.x'")
    assert load_error(folder, "++mephisto.task.colour=red").startswith("unknown key 'mephisto.task.colour'")


def test_value_of_wrong_type(folder: Path) -> None:
    assert load_error(folder, "mephisto.task.task_reward=abc") == (
        "invalid value for 'mephisto.task.task_reward': 'abc' (expected float)"
    )
    assert load_error(folder, "mephisto.blueprint.units_per_assignment=1.5") == (
        "invalid value for 'mephisto.blueprint.units_per_assignment': 1.5 (expected int)"
    )
    assert load_error(folder, "mephisto.task.force_rebuild=maybe") == (
        "invalid value for 'mephisto.task.force_rebuild': 'maybe' (expected bool)"
    )


def test_value_of_wrong_type_in_file(tmp_path: Path) -> None:
    write_conf(tmp_path, edited("units_per_assignment: 1", "units_per_assignment: two"))
    assert load_error(tmp_path) == (
        "invalid value for 'mephisto.blueprint.units_per_assignment': 'two' (expected int)"
    )
    write_conf(tmp_path, edited("units_per_assignment: 1", "units_per_assignment: {a: 1}"))
    assert "(expected int)" in load_error(tmp_path)


def test_value_outside_choices_or_minimum(folder: Path) -> None:
    assert load_error(folder, "mephisto.architect.server_type=java") == (
        "invalid value for 'mephisto.architect.server_type': 'java' (expected one of: node, flask)"
    )
    assert load_error(folder, "mephisto.task.max_num_concurrent_units=-1") == (
        "invalid value for 'mephisto.task.max_num_concurrent_units': -1 (expected int >= 0)"
    )
    assert "(expected int >= 1)" in load_error(folder, "mephisto.blueprint.units_per_assignment=0")


def test_required_argument_missing(tmp_path: Path) -> None:
    write_conf(tmp_path, edited("    task_source: ${task_dir}/server_files/demo_task.html\n", ""))
    assert load_error(tmp_path).startswith("missing required argument 'mephisto.blueprint.task_source'")


def test_task_name_missing(tmp_path: Path) -> None:
    write_conf(tmp_path, edited("    task_name: html-static-task-example\n", ""))
    assert load_error(tmp_path).startswith("missing required argument 'mephisto.task.task_name'")
    write_conf(tmp_path, edited("task_name: html-static-task-example", "task_name: ???"))
    assert load_error(tmp_path).startswith("missing required argument 'mephisto.task.task_name'")


def test_mturk_needs_a_requester(folder: Path) -> None:
    assert load_error(folder, "mephisto/provider=mturk").startswith(
        "missing required argument 'mephisto.provider.requester_name'")


def test_malformed_override(folder: Path) -> None:
    assert load_error(folder, "mephisto.task.max_num_concurrent_units") == (
        "malformed override 'mephisto.task.max_num_concurrent_units': expected key=value, "
        "e.g. mephisto.task.max_num_concurrent_units=50"
    )
    assert load_error(folder, "=5").startswith("malformed override '=5'")
    assert load_error(folder, "~mephisto.task.task_tags").endswith("removing keys is not supported")


def test_unresolvable_interpolation(tmp_path: Path) -> None:
    path = write_conf(tmp_path, edited("${task_dir}/data.csv", "${data_dir}/data.csv"))
    assert load_error(tmp_path) == (
        f"{path}: cannot resolve 'mephisto.blueprint.data_csv': Interpolation key 'data_dir' not found"
    )


# -- the argument registry ---------------------------------------------------------------------------


def test_registry_lookups() -> None:
    assert [section.name for section in sections("provider")] == ["mock", "mturk", "mturk_sandbox", "prolific",
                                                             "inhouse"]
    assert get_section("architect", "local").argument("port") is not None
    with pytest.raises(ConfigError, match=r"^unknown blueprint 'foo'; known: static_task, static_react_task, remote_procedure, parlai_chat$"):
        get_section("blueprint", "foo")
    with pytest.raises(ConfigError, match="unknown argument kind"):
        sections("database")


def test_required_arguments_have_no_default_and_print_as_missing() -> None:
    task_source = get_section("blueprint", "static_task").argument("task_source")
    assert task_source is not None and task_source.required and task_source.default is MISSING
    assert task_source.default_text == "???"
    assert copy.deepcopy(task_source).default is MISSING


def test_every_default_is_a_valid_value() -> None:
    for kind in KINDS:
        for section in sections(kind):
            for argument in section.arguments:
                assert argument.help and argument.type in (str, int, float, bool, list)
                assert argument.required == (argument.default is MISSING)
                if argument.default is not MISSING and argument.default is not None:
                    assert coerce(argument, argument.default, argument.dest) == argument.default


def test_a_top_level_override_without_its_prefix_is_refused_with_the_dotted_key(folder: Path) -> None:
    assert load_error(folder, "task_name=oops").startswith(
        "unknown key 'task_name'; did you mean 'mephisto.task.task_name'? (from override 'task_name=oops')")
    assert "did you mean 'mephisto.task.max_num_concurrent_units'?" in load_error(
        folder, "max_num_concurent_units=5")
    assert "did you mean 'mephisto.blueprint.units_per_assignment'?" in load_error(
        folder, "blueprint.units_per_assignment=2")
    assert "task arguments are set as mephisto.KIND.NAME=VALUE" in load_error(folder, "zzzzqqq=1")


def test_a_top_level_key_of_the_task_config_itself_can_be_overridden(tmp_path: Path) -> None:
    write_conf(tmp_path, EXAMPLE + "num_turns: 3\n")
    load_task_config(tmp_path, "example", ["num_turns=5"])  # the task's own key: taken, not refused
