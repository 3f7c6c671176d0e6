"""The ``static_task`` blueprint's files and data (Mephisto's StaticHTMLBlueprint), with no database or web.

- :func:`validate_and_load` checks the source files, the hooks module and the qualification requirements,
  and reads the data rows (CSV, JSON or JSON lines).
- :func:`build` lays out what the worker-facing server serves for a run.
- :func:`init_task_data` is one assignment's data as the page receives it; :func:`onboarding_task_data`
  is the onboarding page's.
- :func:`frontend_args` is what ``/task_config.json`` answers.

Relative paths are taken from the current directory, as Mephisto does; task folders normally use
``${task_dir}`` so every path is absolute.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mephisto_dist.blueprints.hooks import TaskHooks, hooks_for
from mephisto_dist.config import TaskConfig
from mephisto_dist.domain.qualifications import Requirement
from mephisto_dist.errors import ConfigError

DATA_ARGS: Final = ("data_csv", "data_json", "data_jsonl")
PREVIEW_FILE: Final = "preview.html"
ONBOARDING_FILE: Final = "onboarding.html"


NAME: Final = "static_task"
INDEX_PAGE: Final = None
"""The page at ``/``: None means the web server's own static HTML shell."""


def validate_and_load(blueprint_args: Mapping[str, Any],
                      rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Check the HTML sources, the hooks module, the requirements and the data; return the data rows
    (one per assignment): ``rows`` from a task script's ``static_task_data`` when given, else the file's."""
    _check_sources(blueprint_args)
    check_features(blueprint_args)
    hooks_for(blueprint_args)
    requirements(blueprint_args)
    return load_rows(blueprint_args, rows)


def load_rows(blueprint_args: Mapping[str, Any], rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The assignments' data: ``rows`` given by a script (Mephisto prefers them), else the data file."""
    if rows:
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise ConfigError(f"static_task_data item {number} must be a dict, found {_json_kind(row)}")
        return rows
    dest, path = _data_file(blueprint_args)
    if dest == "data_csv":
        return _load_csv(path)
    if dest == "data_json":
        return _load_json(path)
    return _load_jsonl(path)


def build(blueprint_args: Mapping[str, Any], build_dir: Path, provider_type: str = "mock", *,
          cache_dir: Path | None = None) -> None:
    """Lay out the served files in ``build_dir``: the task HTML under its own name, ``preview.html``,
    ``onboarding.html`` and the contents of ``extra_source_dir`` (relative paths kept).

    Everything is written into a staging folder next to ``build_dir`` and renamed into place at the
    end, so a failure leaves the previous build (or nothing) rather than half a build.
    """
    sources = _check_sources(blueprint_args)
    target = Path(build_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as error:
        raise ConfigError(f"cannot build the static_task files into {target}: {error}") from None
    try:
        staging.chmod(0o755)  # mkdtemp makes 0700; the build is served like any other folder
        if sources.extra_dir is not None:
            shutil.copytree(sources.extra_dir, staging, dirs_exist_ok=True)
        # The named pages are copied last so that they win over same-named files in extra_source_dir.
        shutil.copy2(sources.task, staging / sources.task.name)
        shutil.copy2(sources.preview or sources.task, staging / PREVIEW_FILE)
        if sources.onboarding is not None:
            shutil.copy2(sources.onboarding, staging / ONBOARDING_FILE)
        _swap_into_place(staging, target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"cannot build the static_task files into {target}: {error}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def requirements(blueprint_args: Mapping[str, Any]) -> tuple[Requirement, ...]:
    """``mephisto.blueprint.qualifications``, parsed: what a worker must hold to be given a unit."""
    given = blueprint_args.get("qualifications")
    if given is None:
        return ()
    if not isinstance(given, list):
        raise ConfigError("mephisto.blueprint.qualifications must be a list of "
                          "{qualification_name, comparator, value}")
    parsed = []
    for number, item in enumerate(given, start=1):
        if not isinstance(item, Mapping):
            raise ConfigError(f"mephisto.blueprint.qualifications item {number} must be a mapping "
                              f"{{qualification_name, comparator, value}}, found {item!r}")
        parsed.append(Requirement.from_dict(item))
    return tuple(parsed)


def check_features(blueprint_args: Mapping[str, Any]) -> None:
    if blueprint_args.get("onboarding_qualification") and not blueprint_args.get("onboarding_source"):
        raise ConfigError(
            "mephisto.blueprint.onboarding_qualification needs mephisto.blueprint.onboarding_source "
            "(the onboarding page)"
        )


def onboarding_task_data(hooks: TaskHooks) -> dict[str, Any]:
    """The onboarding page's data: the hooks' ``onboarding_data`` plus ``html``, the page to show."""
    return {**hooks.onboarding_data, "html": ONBOARDING_FILE}


def init_task_data(row: Mapping[str, Any], blueprint_args: Mapping[str, Any]) -> dict[str, Any]:
    """An assignment's initial data: the row plus ``html``, the name the task page is served under."""
    return {**row, "html": _task_file_name(blueprint_args)}


def frontend_args(config: TaskConfig, hooks: TaskHooks) -> dict[str, Any]:
    """The ``task_config`` the static HTML front end receives from ``/task_config.json``.

    Mephisto 1.x's StaticHTMLBlueprint adds nothing to the base Blueprint's (empty) task config; these
    are the keys Mephisto's other blueprints send and its front-end packages read, filled for a static
    page. ``frame_height`` 0 lets MTurk size the frame to the window; nothing is blocked on mobile. A
    hooks module's ``task_config`` is merged in last, as Mephisto merged ``SharedTaskState.task_config``.
    """
    blueprint = config.blueprint
    base = {
        "task_source": _task_file_name(blueprint),
        "preview_source": PREVIEW_FILE,
        "has_preview": bool(blueprint.get("preview_source")),
        "onboarding_source": ONBOARDING_FILE if blueprint.get("onboarding_source") else None,
        "task_title": config.task["task_title"],
        "task_description": config.task["task_description"],
        "chat_title": config.task["task_title"],
        "frame_height": 0,
        "block_mobile": False,
    }
    return {**base, **hooks.task_config}


# -- sources -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    task: Path
    preview: Path | None
    onboarding: Path | None
    extra_dir: Path | None


def _path(blueprint_args: Mapping[str, Any], dest: str) -> Path | None:
    value = blueprint_args.get(dest)
    if value is None or value == "":
        return None
    return Path(str(value)).expanduser().resolve()


def _existing_file(blueprint_args: Mapping[str, Any], dest: str) -> Path | None:
    path = _path(blueprint_args, dest)
    if path is None:
        return None
    if not path.exists():
        raise ConfigError(f"{dest} not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{dest} is not a file: {path}")
    return path


def _check_sources(blueprint_args: Mapping[str, Any]) -> _Sources:
    task = _existing_file(blueprint_args, "task_source")
    if task is None:
        raise ConfigError("static_task needs mephisto.blueprint.task_source (the task's HTML file)")
    sources = _Sources(
        task=task,
        preview=_existing_file(blueprint_args, "preview_source"),
        onboarding=_existing_file(blueprint_args, "onboarding_source"),
        extra_dir=_path(blueprint_args, "extra_source_dir"),
    )
    if sources.extra_dir is not None:
        if not sources.extra_dir.exists():
            raise ConfigError(f"extra_source_dir not found: {sources.extra_dir}")
        if not sources.extra_dir.is_dir():
            raise ConfigError(f"extra_source_dir is not a folder: {sources.extra_dir}")
    for reserved, dest, other in ((PREVIEW_FILE, "preview_source", sources.preview),
                                  (ONBOARDING_FILE, "onboarding_source", sources.onboarding)):
        if task.name == reserved and other is not None and other != task:
            raise ConfigError(
                f"task_source is named {reserved}, which is where {dest} is served; rename {task}"
            )
    return sources


def _task_file_name(blueprint_args: Mapping[str, Any]) -> str:
    path = _path(blueprint_args, "task_source")
    if path is None:
        raise ConfigError("static_task needs mephisto.blueprint.task_source (the task's HTML file)")
    return path.name


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing a previous build (briefly absent in between)."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- data --------------------------------------------------------------------------------------------


def _data_file(blueprint_args: Mapping[str, Any]) -> tuple[str, Path]:
    given = [(dest, path) for dest in DATA_ARGS if (path := _path(blueprint_args, dest)) is not None]
    if not given:
        raise ConfigError(
            "static_task needs its data: set one of mephisto.blueprint.data_csv, data_json or data_jsonl"
        )
    if len(given) > 1:
        found = " and ".join(dest for dest, _ in given)
        raise ConfigError(f"set only one of mephisto.blueprint.data_csv, data_json, data_jsonl (found {found})")
    dest, path = given[0]
    if not path.is_file():
        raise ConfigError(f"{dest} not found: {path}")
    return dest, path


def _load_csv(path: Path) -> list[dict[str, Any]]:
    name = path.name
    header: list[str] | None = None
    rows: list[dict[str, Any]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            try:
                for fields in reader:
                    if not fields:
                        continue  # a blank line is not an assignment
                    if header is None:
                        header = _csv_header(fields, name)
                    elif len(fields) != len(header):
                        raise ConfigError(
                            f"{name} line {reader.line_num}: {len(fields)} fields, the header has {len(header)}"
                        )
                    else:
                        rows.append(dict(zip(header, fields, strict=True)))
            except csv.Error as error:
                raise ConfigError(f"{name} line {reader.line_num}: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{name} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    if header is None:
        raise ConfigError(f"{name} is empty: it needs a header row and at least one data row")
    if not rows:
        raise ConfigError(f"{name} has a header but no rows")
    return rows


def _csv_header(fields: list[str], name: str) -> list[str]:
    seen: set[str] = set()
    for column, field in enumerate(fields, start=1):
        if not field.strip():
            raise ConfigError(f"{name} header column {column} has no name")
        if field in seen:
            raise ConfigError(f"{name} header names column '{field}' twice")
        seen.add(field)
    return fields


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path.name} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None


def _load_json(path: Path) -> list[dict[str, Any]]:
    name = path.name
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{name} line {error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(data, list):
        raise ConfigError(f"{name} must hold a JSON list of objects, found {_json_kind(data)}")
    if not data:
        raise ConfigError(f"{name} holds an empty list: there is nothing to launch")
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise ConfigError(f"{name} item {number}: expected an object, found {_json_kind(item)}")
    return data


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    name = path.name
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{name} line {number}: invalid JSON ({error.msg})") from None
        if not isinstance(item, dict):
            raise ConfigError(f"{name} line {number}: expected a JSON object, found {_json_kind(item)}")
        rows.append(item)
    if not rows:
        raise ConfigError(f"{name} has no rows")
    return rows


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return "a number"
