"""The ``parlai_chat`` blueprint (Mephisto's ParlAIChatBlueprint): a ParlAI world, written in the task's
``world_file``, played by a runner worker with the workers of one conversation on bootstrap-chat's page.

- The world module (``make_world``, ``get_world_params``, optionally ``make_onboarding_world`` and
  ``validate_onboarding``) is imported at launch to check it and to learn ``agent_count``: each
  assignment (a ``context_csv`` row, a ``context_jsonl`` line, or one of ``num_conversations``) has that
  many units. The runner (``compat.parlai_chat.ParlAIChatTaskRunner``) imports it again where it runs.
- The page is ``custom_source_bundle`` if given, else the default front end in ``static/parlai_chat/``
  (Mephisto's parlai_chat webapp: bootstrap-chat's ``ChatApp`` on ``mephisto-task``), built with npm once
  per machine into ``<data dir>/build-cache/`` and reused by every later run.
- ``task_description_file`` and ``preview_source`` are read at launch and stored with the run
  (:func:`stored_frontend`), as Mephisto's blueprint reads them when it is made, so a web process on
  another machine serves them without the task folder.

ParlAI itself is imported only through the world module; without it the launch fails with one line
naming the extra to install.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from mephisto_dist.blueprints import static_task
from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.config import TaskConfig
from mephisto_dist.errors import ConfigError
from mephisto_dist.providers import wrap_crowd_source

NAME: Final = "parlai_chat"
INDEX_PAGE: Final = "index.html"
BUNDLE_FILE: Final = "bundle.js"
STYLE_FILE: Final = "bundle.css"
WRAP_FILE: Final = "wrap_crowd_source.js"
PREVIEW_FILE: Final = "preview.html"
WEBAPP: Final = Path(__file__).with_name("static") / "parlai_chat"
WEBAPP_SOURCES: Final = ("package.json", "package-lock.json", "index.html", "src/main.js")
NEEDS_PARLAI: Final = "blueprint parlai_chat needs ParlAI: pip install 'mephisto-dist[parlai]'"
MISSING_DESCRIPTION: Final = (
    "<h1>You didn't specify a task_description_file and also didn't override the frontend "
    "`TaskPreviewView` (if this is a preview) or the `TaskDescription` component (if this is in-task).</h1>")
"""Mephisto's text where a description is missing."""

requirements = static_task.requirements


def world_module(blueprint_args: Mapping[str, Any]) -> ModuleType:
    """The world file, imported as Mephisto imports it (its folder on ``sys.path``); a ConfigError that
    names what is missing otherwise."""
    path = _file(blueprint_args, "world_file", required=True)
    assert path is not None
    return load_world_module(path)


def load_world_module(path: Path) -> ModuleType:
    name = f"_parlai_world_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"world_file {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # Mephisto's own step: the world may import its neighbours
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        if (error.name or "").split(".")[0] == "parlai":
            raise ConfigError(f"{NEEDS_PARLAI} ({path.name}: {error})") from None
        raise ConfigError(f"world_file {path.name} cannot be imported: {error}") from None
    for needed in ("make_world", "get_world_params"):
        if not callable(getattr(module, needed, None)):
            raise ConfigError(f"world_file {path.name} has no `{needed}` function")
    sys.modules[name] = module
    return module


def agent_count(module: ModuleType) -> int:
    params = module.get_world_params()
    count = params.get("agent_count") if isinstance(params, Mapping) else None
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"get_world_params() must give an agent_count of at least 1, gave {params!r}")
    return count


def units_per_assignment(blueprint_args: Mapping[str, Any]) -> int:
    """One unit per agent of the world: ``get_world_params()['agent_count']``."""
    return agent_count(world_module(blueprint_args))


def validate_and_load(blueprint_args: Mapping[str, Any],
                      rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Mephisto's ``assert_task_args``: the world, the conversations' data, the optional files."""
    world_module(blueprint_args)
    if blueprint_args.get("custom_source_dir"):
        raise ConfigError("parlai_chat's custom_source_dir is not built by mephisto-dist yet: build it with npm "
                          "and give the bundle as mephisto.blueprint.custom_source_bundle")
    for dest in ("custom_source_bundle", "preview_source", "task_description_file"):
        _file(blueprint_args, dest)
    _extra_dir(blueprint_args)
    requirements(blueprint_args)
    return _conversations(blueprint_args)


def _conversations(blueprint_args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each conversation's shared data: a CSV row, a JSON line, or ``{}`` per ``num_conversations``."""
    csv_path = _file(blueprint_args, "context_csv")
    if csv_path is not None:
        with csv_path.open(encoding="utf-8-sig", newline="") as data:
            return [dict(row) for row in csv.DictReader(data)]
    jsonl_path = _file(blueprint_args, "context_jsonl")
    if jsonl_path is not None:
        with jsonl_path.open(encoding="utf-8-sig") as data:
            return [json.loads(line) for line in data if line.strip()]
    count = blueprint_args.get("num_conversations")
    if count:
        return [{} for _ in range(int(count))]
    raise ConfigError("parlai_chat needs one of mephisto.blueprint.context_csv, context_jsonl or num_conversations")


def build(blueprint_args: Mapping[str, Any], build_dir: Path, provider_type: str = "mock", *,
          cache_dir: Path | None = None) -> None:
    """Lay out the page (``index.html``, ``bundle.js`` and its ``bundle.css``), the provider's
    ``wrap_crowd_source.js``, ``preview.html`` and ``extra_source_dir`` in ``build_dir``."""
    custom = _file(blueprint_args, "custom_source_bundle")
    built = None if custom is not None else default_bundle(cache_dir or Path(tempfile.gettempdir()))
    target = Path(build_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        staging.chmod(0o755)
        extra = _extra_dir(blueprint_args)
        if extra is not None:
            shutil.copytree(extra, staging, dirs_exist_ok=True)
        shutil.copy2(WEBAPP / INDEX_PAGE, staging / INDEX_PAGE)
        if custom is not None:
            shutil.copy2(custom, staging / BUNDLE_FILE)
            (staging / STYLE_FILE).write_text("", encoding="utf-8")
        else:
            assert built is not None
            shutil.copy2(built / BUNDLE_FILE, staging / BUNDLE_FILE)
            shutil.copy2(built / STYLE_FILE, staging / STYLE_FILE)
        preview = _file(blueprint_args, "preview_source")
        if preview is not None:
            shutil.copy2(preview, staging / PREVIEW_FILE)
        shutil.copy2(wrap_crowd_source(provider_type), staging / WRAP_FILE)
        staging.rename(target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"cannot build the parlai_chat files into {target}: {error}") from None


def default_bundle(cache_dir: Path) -> Path:
    """The default page's ``build/`` folder, built with npm on this machine's first parlai_chat run."""
    digest = hashlib.sha256()
    for name in WEBAPP_SOURCES:
        digest.update(name.encode() + b"\0" + (WEBAPP / name).read_bytes())
    target = cache_dir / f"parlai-chat-{digest.hexdigest()[:16]}"
    if (target / "build" / BUNDLE_FILE).is_file():
        return target / "build"
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise ConfigError(f"parlai_chat's default page is built with npm once per machine, and {tool} is not "
                              "on PATH: install Node.js and npm, or give mephisto.blueprint.custom_source_bundle")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".parlai-chat.", dir=cache_dir))
    log_path = cache_dir / f"{target.name}.npm.log"
    try:
        for name in WEBAPP_SOURCES:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(WEBAPP / name, staging / name)
        with log_path.open("ab") as log:
            for command in (["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run", "dev"]):
                log.write(f"$ {' '.join(command)}\n".encode())
                log.flush()
                code = subprocess.run(command, cwd=staging, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, check=False).returncode
                if code != 0:
                    raise ConfigError(f"building parlai_chat's default page: `{' '.join(command)}` failed "
                                      f"(exit {code}); see {log_path}")
        shutil.rmtree(staging / "node_modules", ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "build" / BUNDLE_FILE).is_file():  # another process finished first otherwise
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "build"


def stored_frontend(blueprint_args: Mapping[str, Any]) -> dict[str, Any]:
    """What the page shows from the task folder's files, read at launch and stored with the run."""
    description = _file(blueprint_args, "task_description_file")
    preview = _file(blueprint_args, "preview_source")
    return {
        "task_description": description.read_text(encoding="utf-8") if description else MISSING_DESCRIPTION,
        "preview_html": preview.read_text(encoding="utf-8") if preview else MISSING_DESCRIPTION,
        "has_preview": preview is not None,
    }


def init_task_data(row: Mapping[str, Any], blueprint_args: Mapping[str, Any]) -> dict[str, Any]:
    """An assignment's stored data: the conversation's shared data (``InitializationData.shared``)."""
    return dict(row)


def onboarding_task_data(hooks: TaskHooks) -> dict[str, Any]:
    return {"task_data": dict(hooks.onboarding_data), "past_live_updates": []}


def frontend_args(config: TaskConfig, hooks: TaskHooks) -> dict[str, Any]:
    """``/task_config.json``: Mephisto's parlai_chat keys (the description and preview come from the
    run's stored copy, :func:`stored_frontend`), then the script's ``task_config``."""
    shared = hooks.shared_state
    base = {
        "task_title": config.task["task_title"],
        "task_description": config.task["task_description"],
        "frame_height": 650,
        "chat_title": config.task["task_title"],
        "has_preview": bool(config.blueprint.get("preview_source")),
        "block_mobile": True,
        "frontend_task_opts": dict(getattr(shared, "frontend_task_opts", None) or {}),
        "onboarding_qualification": config.blueprint.get("onboarding_qualification"),
    }
    return {**base, **hooks.task_config}


def _file(blueprint_args: Mapping[str, Any], dest: str, *, required: bool = False) -> Path | None:
    value = blueprint_args.get(dest)
    if not value:
        if required:
            raise ConfigError(f"parlai_chat needs mephisto.blueprint.{dest}")
        return None
    path = Path(str(value)).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"mephisto.blueprint.{dest} not found: {path}")
    return path


def _extra_dir(blueprint_args: Mapping[str, Any]) -> Path | None:
    value = blueprint_args.get("extra_source_dir")
    if not value:
        return None
    path = Path(str(value)).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"extra_source_dir is not a folder: {path}")
    return path
