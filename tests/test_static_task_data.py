"""The static_task blueprint's files and data: sources, CSV/JSON/JSONL rows, the build layout."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from mephisto_dist.blueprints import check_python_features
from mephisto_dist.blueprints.hooks import NO_HOOKS
from mephisto_dist.blueprints.static_task import build, frontend_args, init_task_data, validate_and_load
from mephisto_dist.config.loader import load_task_config
from mephisto_dist.errors import ConfigError


def make_task(tmp_path: Path, data_name: str = "data.csv", data: str = "text,label\nhello,1\n",
              **args: Any) -> dict[str, Any]:
    """Blueprint args for a task folder with a task page, a preview, images and one data file."""
    files = tmp_path / "server_files"
    (files / "extra_refs" / "images").mkdir(parents=True, exist_ok=True)
    (files / "demo_task.html").write_text("<p>${text}</p><img src='images/cat.png'>")
    (files / "demo_preview.html").write_text("<p>preview</p>")
    (files / "extra_refs" / "images" / "cat.png").write_bytes(b"\x89PNG")
    (files / "extra_refs" / "style.css").write_text("p {}")
    (tmp_path / data_name).write_text(data, encoding="utf-8")
    blueprint: dict[str, Any] = {
        "task_source": str(files / "demo_task.html"),
        "preview_source": str(files / "demo_preview.html"),
        "onboarding_source": None,
        "extra_source_dir": str(files / "extra_refs"),
        "data_csv": None,
        "data_json": None,
        "data_jsonl": None,
        data_name.replace(".", "_"): str(tmp_path / data_name),
        "units_per_assignment": 1,
        "onboarding_qualification": None,
        "use_golds": False,
        "use_screening_task": False,
    }
    blueprint.update(args)
    return blueprint


def load_error(blueprint: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_and_load(blueprint)
    message = str(caught.value)
    assert "\n" not in message
    return message


def csv_error(tmp_path: Path, data: str | bytes) -> str:
    blueprint = make_task(tmp_path)
    path = Path(blueprint["data_csv"])
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return load_error(blueprint)


# -- CSV ---------------------------------------------------------------------------------------------


def test_csv_rows_are_strings_keyed_by_header(tmp_path: Path) -> None:
    data = 'text,label,note\nhello,1,\n"a, b",2,"two\nlines"\n\n,3,x\n'
    rows = validate_and_load(make_task(tmp_path, data=data))
    assert rows == [
        {"text": "hello", "label": "1", "note": ""},
        {"text": "a, b", "label": "2", "note": "two\nlines"},
        {"text": "", "label": "3", "note": "x"},
    ]


def test_csv_byte_order_mark_is_stripped(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path)
    Path(blueprint["data_csv"]).write_bytes("\ufefftext,label\r\nhé,1\r\n".encode())
    assert validate_and_load(blueprint) == [{"text": "hé", "label": "1"}]


def test_csv_ragged_row(tmp_path: Path) -> None:
    data = "text,label\n" + "a,1\n" * 5 + "b,2,extra\n"
    assert csv_error(tmp_path, data) == "data.csv line 7: 3 fields, the header has 2"


def test_csv_short_row(tmp_path: Path) -> None:
    assert csv_error(tmp_path, "text,label\nonly\n") == "data.csv line 2: 1 fields, the header has 2"


def test_csv_header_only(tmp_path: Path) -> None:
    assert csv_error(tmp_path, "text,label\n") == "data.csv has a header but no rows"


def test_csv_empty(tmp_path: Path) -> None:
    assert csv_error(tmp_path, "").startswith("data.csv is empty")
    assert csv_error(tmp_path, "\n\n").startswith("data.csv is empty")


def test_csv_duplicate_or_empty_header_names(tmp_path: Path) -> None:
    assert csv_error(tmp_path, "text,label,text\na,b,c\n") == "data.csv header names column 'text' twice"
    assert csv_error(tmp_path, "text,,label\na,b,c\n") == "data.csv header column 2 has no name"


def test_csv_not_utf8(tmp_path: Path) -> None:
    assert csv_error(tmp_path, b"text\n\xff\xfe\n").startswith("data.csv is not UTF-8 text")


# -- JSON and JSON lines -----------------------------------------------------------------------------


def test_json_list_of_objects(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path, "data.json", '[{"text": "hi", "n": 1}, {"text": "yo", "tags": ["a"]}]')
    assert validate_and_load(blueprint) == [{"text": "hi", "n": 1}, {"text": "yo", "tags": ["a"]}]


@pytest.mark.parametrize(("data", "message"), [
    ('{"text": "hi"}', "data.json must hold a JSON list of objects, found an object"),
    ('[{"text": "hi"}, "yo"]', "data.json item 2: expected an object, found a string"),
    ("[]", "data.json holds an empty list: there is nothing to launch"),
    ('[{"text": "hi"},\n {"text": }]', "data.json line 2: invalid JSON (Expecting value)"),
])
def test_json_errors(tmp_path: Path, data: str, message: str) -> None:
    assert load_error(make_task(tmp_path, "data.json", data)) == message


def test_jsonl_one_object_per_line(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path, "data.jsonl", '{"text": "hi"}\n\n  \n{"text": "yo", "n": 2}\n')
    assert validate_and_load(blueprint) == [{"text": "hi"}, {"text": "yo", "n": 2}]


@pytest.mark.parametrize(("data", "message"), [
    ('{"text": "hi"}\n{"text": hi}\n', "data.jsonl line 2: invalid JSON (Expecting value)"),
    ('{"text": "hi"}\n\n[1, 2]\n', "data.jsonl line 3: expected a JSON object, found a list"),
    ("\n\n", "data.jsonl has no rows"),
])
def test_jsonl_errors(tmp_path: Path, data: str, message: str) -> None:
    assert load_error(make_task(tmp_path, "data.jsonl", data)) == message


# -- choosing the data file and checking the sources -------------------------------------------------


def test_missing_data_file(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path, data_csv=str(tmp_path / "nope.csv"))
    assert load_error(blueprint) == f"data_csv not found: {tmp_path / 'nope.csv'}"


def test_exactly_one_data_file(tmp_path: Path) -> None:
    assert "set one of mephisto.blueprint.data_csv, data_json or data_jsonl" in load_error(
        make_task(tmp_path, data_csv=None))
    both = make_task(tmp_path / "two", data_json=str(tmp_path / "data.json"))
    assert load_error(both).endswith("(found data_csv and data_json)")


def test_missing_sources(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path)
    assert load_error({**blueprint, "task_source": str(tmp_path / "x.html")}) == (
        f"task_source not found: {tmp_path / 'x.html'}"
    )
    assert load_error({**blueprint, "preview_source": str(tmp_path / "p.html")}) == (
        f"preview_source not found: {tmp_path / 'p.html'}"
    )
    assert load_error({**blueprint, "onboarding_source": str(tmp_path)}) == (
        f"onboarding_source is not a file: {tmp_path}"
    )
    assert load_error({**blueprint, "extra_source_dir": str(tmp_path / "gone")}) == (
        f"extra_source_dir not found: {tmp_path / 'gone'}"
    )
    assert load_error({**blueprint, "extra_source_dir": blueprint["task_source"]}) == (
        f"extra_source_dir is not a folder: {blueprint['task_source']}"
    )
    assert "needs mephisto.blueprint.task_source" in load_error({**blueprint, "task_source": None})


def test_features_that_need_python(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path)
    assert load_error({**blueprint, "onboarding_qualification": "onboarded"}).startswith(
        "mephisto.blueprint.onboarding_qualification needs mephisto.blueprint.onboarding_source")
    with pytest.raises(ConfigError, match=r"^mephisto.blueprint.use_golds=true needs a gold factory and "
                                          r"validator written in Python: launch it from a task script"):
        check_python_features({**blueprint, "use_golds": True}, has_script=False)
    check_python_features({**blueprint, "use_golds": True}, has_script=True)
    with pytest.raises(ConfigError, match=r"use_screening_task=true needs .* launch it from a task script"):
        check_python_features({**blueprint, "use_screening_task": True}, has_script=False)
    check_python_features({**blueprint, "use_screening_task": True}, has_script=True)


# -- building the served files -----------------------------------------------------------------------


def test_build_lays_out_the_served_files(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path)
    onboarding = tmp_path / "server_files" / "onboard.html"
    onboarding.write_text("<p>learn</p>")
    build_dir = tmp_path / "builds" / "run-1"

    build({**blueprint, "onboarding_source": str(onboarding)}, build_dir)

    assert sorted(p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*") if p.is_file()) == [
        "demo_task.html", "images/cat.png", "onboarding.html", "preview.html", "style.css",
    ]
    assert (build_dir / "demo_task.html").read_text().startswith("<p>${text}</p>")
    assert (build_dir / "preview.html").read_text() == "<p>preview</p>"
    assert (build_dir / "onboarding.html").read_text() == "<p>learn</p>"
    assert (build_dir / "images" / "cat.png").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in build_dir.parent.iterdir()) == ["run-1"]


def test_build_previews_the_task_page_without_a_preview(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path, preview_source=None, extra_source_dir=None)
    build_dir = tmp_path / "build"
    build(blueprint, build_dir)
    assert sorted(p.name for p in build_dir.iterdir()) == ["demo_task.html", "preview.html"]
    assert (build_dir / "preview.html").read_text() == (build_dir / "demo_task.html").read_text()


def test_build_replaces_a_previous_build(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path)
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    (build_dir / "stale.html").write_text("old")
    build(blueprint, build_dir)
    assert not (build_dir / "stale.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_failed_build_leaves_nothing_half_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blueprint = make_task(tmp_path)
    onboarding = tmp_path / "server_files" / "onboard.html"
    onboarding.write_text("<p>learn</p>")
    builds = tmp_path / "builds"
    build_dir = builds / "run-1"
    build(blueprint, build_dir)
    real_copy = shutil.copy2

    def failing_copy(source: Any, target: Any, **kwargs: Any) -> Any:
        if Path(target).name == "onboarding.html":
            raise OSError(28, "No space left on device")
        return real_copy(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copy2", failing_copy)
    with pytest.raises(ConfigError, match=r"cannot build the static_task files into .*No space left"):
        build({**blueprint, "onboarding_source": str(onboarding)}, build_dir)
    assert sorted(p.name for p in builds.iterdir()) == ["run-1"]
    assert not (build_dir / "onboarding.html").exists()  # the previous build is untouched

    with pytest.raises(ConfigError):
        build({**blueprint, "onboarding_source": str(onboarding)}, builds / "run-2")
    assert sorted(p.name for p in builds.iterdir()) == ["run-1"]


def test_build_checks_sources_first(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path, task_source=str(tmp_path / "missing.html"))
    with pytest.raises(ConfigError, match="task_source not found"):
        build(blueprint, tmp_path / "build")
    assert not (tmp_path / "build").exists()


def test_task_page_may_not_take_the_preview_name(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path)
    renamed = tmp_path / "server_files" / "preview.html"
    Path(blueprint["task_source"]).rename(renamed)
    assert load_error({**blueprint, "task_source": str(renamed)}).startswith(
        "task_source is named preview.html, which is where preview_source is served")


# -- what the page receives --------------------------------------------------------------------------


def test_init_task_data_adds_the_page_name(tmp_path: Path) -> None:
    blueprint = make_task(tmp_path)
    row = {"text": "hello", "label": "1"}
    assert init_task_data(row, blueprint) == {"text": "hello", "label": "1", "html": "demo_task.html"}
    assert row == {"text": "hello", "label": "1"}


def test_loaded_task_folder_end_to_end(tmp_path: Path) -> None:
    make_task(tmp_path)
    conf = tmp_path / "hydra_configs" / "conf" / "example.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text("""\
defaults:
  - /mephisto/blueprint: static_task
  - /mephisto/architect: local
  - /mephisto/provider: mock
mephisto:
  blueprint:
    data_csv: ${task_dir}/data.csv
    task_source: ${task_dir}/server_files/demo_task.html
    extra_source_dir: ${task_dir}/server_files/extra_refs
  task:
    task_name: rate
    task_title: Rate a sentence
    task_description: Say how natural it sounds.
    task_reward: 0.3
    task_tags: static,task
""")
    config = load_task_config(tmp_path)

    rows = validate_and_load(config.blueprint)
    assert [init_task_data(row, config.blueprint) for row in rows] == [
        {"text": "hello", "label": "1", "html": "demo_task.html"},
    ]
    assert frontend_args(config, NO_HOOKS) == {
        "task_source": "demo_task.html",
        "preview_source": "preview.html",
        "has_preview": False,
        "onboarding_source": None,
        "task_title": "Rate a sentence",
        "task_description": "Say how natural it sounds.",
        "chat_title": "Rate a sentence",
        "frame_height": 0,
        "block_mobile": False,
    }
