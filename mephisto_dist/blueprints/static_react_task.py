"""The ``static_react_task`` blueprint (Mephisto's StaticReactBlueprint): a prebuilt JavaScript bundle,
typically a React app on the ``mephisto-task`` package, served with the provider's
``wrap_crowd_source.js`` and the files of ``extra_source_dir`` (its ``index.html`` loads both scripts;
a plain one is supplied when it has none). Each data row is the page's ``initialTaskData``; onboarding,
units per assignment, requirements and data from a task script work as for ``static_task``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from mephisto_dist.blueprints import static_task
from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.config import TaskConfig
from mephisto_dist.errors import ConfigError
from mephisto_dist.providers import wrap_crowd_source

NAME: Final = "static_react_task"
INDEX_PAGE: Final = "index.html"
BUNDLE_FILE: Final = "bundle.js"
WRAP_FILE: Final = "wrap_crowd_source.js"
DEFAULT_INDEX: Final = Path(__file__).with_name("static") / "react_index.html"

requirements = static_task.requirements


def validate_and_load(blueprint_args: Mapping[str, Any],
                      rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Check the bundle, ``extra_source_dir`` and the requirements; return the data rows."""
    _bundle(blueprint_args)
    _extra_dir(blueprint_args)
    requirements(blueprint_args)
    return static_task.load_rows(blueprint_args, rows)


def build(blueprint_args: Mapping[str, Any], build_dir: Path, provider_type: str = "mock", *,
          cache_dir: Path | None = None) -> None:
    """Lay out ``extra_source_dir``, ``bundle.js``, the provider's ``wrap_crowd_source.js`` and an
    ``index.html`` in ``build_dir``; a failure leaves no half build."""
    bundle = _bundle(blueprint_args)
    extra = _extra_dir(blueprint_args)
    wrap = wrap_crowd_source(provider_type)
    target = Path(build_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as error:
        raise ConfigError(f"cannot build the static_react_task files into {target}: {error}") from None
    try:
        staging.chmod(0o755)
        if extra is not None:
            shutil.copytree(extra, staging, dirs_exist_ok=True)
        if not (staging / INDEX_PAGE).is_file():
            shutil.copy2(DEFAULT_INDEX, staging / INDEX_PAGE)
        shutil.copy2(bundle, staging / BUNDLE_FILE)
        shutil.copy2(wrap, staging / WRAP_FILE)
        staging.rename(target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"cannot build the static_react_task files into {target}: {error}") from None


def init_task_data(row: Mapping[str, Any], blueprint_args: Mapping[str, Any]) -> dict[str, Any]:
    """The page's ``initialTaskData``: the row itself."""
    return dict(row)


def onboarding_task_data(hooks: TaskHooks) -> dict[str, Any]:
    return dict(hooks.onboarding_data)


def frontend_args(config: TaskConfig, hooks: TaskHooks) -> dict[str, Any]:
    """``/task_config.json``: the keys Mephisto's static blueprints send, then the script's task_config."""
    base = {
        "task_title": config.task["task_title"],
        "task_description": config.task["task_description"],
        "chat_title": config.task["task_title"],
        "frame_height": 0,
        "block_mobile": False,
        "has_preview": False,
        "onboarding_qualification": config.blueprint.get("onboarding_qualification"),
    }
    return {**base, **hooks.task_config}


def _bundle(blueprint_args: Mapping[str, Any]) -> Path:
    value = blueprint_args.get("task_source")
    if not value:
        raise ConfigError("static_react_task needs mephisto.blueprint.task_source (the task's bundle.js)")
    path = Path(str(value)).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"task_source not found: {path} (build the webapp first: build_custom_bundle in "
                          "run_task.py, or `npm run dev` in webapp/)")
    return path


def _extra_dir(blueprint_args: Mapping[str, Any]) -> Path | None:
    value = blueprint_args.get("extra_source_dir")
    if not value:
        return None
    path = Path(str(value)).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"extra_source_dir is not a folder: {path}")
    return path
