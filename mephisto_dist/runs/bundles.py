"""Run bundles: what a run serves and runs, stored once in object storage so no machine needs another's disk.

A bundle is one tar file holding ``build/`` (the blueprint's built files, served to workers) and
``python/`` (every ``.py`` file of the task folder, relative paths kept: the hooks module and whatever it
imports from the folder), and ``review/bundle.review.js`` when the run's config names a review bundle
(``mephisto.blueprint.task_source_review``, the task's review version that Mephisto's TaskReview renders a
submission with) and it was built. It is stored under ``bundles/<sha256>.tar``, the hash of its bytes, when the
run is created, and the key is recorded on the run. Entries are written in a fixed order with fixed
metadata, so the same files give the same key and are stored once.

Web and Celery processes fetch a bundle on first use into this machine's cache
(``<data dir>/bundle-cache/<sha256>/``), check its hash, and serve and import from there. A hooks file
edited after a run was created therefore belongs to the next run, never to half of a running one.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from mephisto_dist.blueprints.hooks import HOOKS_ARG, NO_HOOKS, TaskHooks, hooks_for, load_hooks
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import ConfigError, NotFoundError
from mephisto_dist.storage import Storage
from mephisto_dist.storage.bundle_cache import (
    BUILD_DIR,
    KEY_PREFIX,
    PYTHON_DIR,
    REVIEW_DIR,
    BundleCache,
    sha256_of,
)

# Folders that hold someone else's Python (environments, caches), never the task's own modules.
_SKIPPED_DIRS: Final = {"__pycache__", "node_modules", "site-packages", "venv", "env"}
MAX_PYTHON_FILES: Final = 500
REVIEW_BUNDLE: Final = "bundle.review.js"


def _left_out(folder: str) -> bool:
    """Whether a bundle leaves this folder (and all below it) out."""
    return folder.startswith(".") or folder in _SKIPPED_DIRS


def python_files(task_dir: Path) -> list[Path]:
    """The task folder's ``.py`` files, relative to it, in a fixed order."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(task_dir):
        dirs[:] = sorted(d for d in dirs if not _left_out(d))
        found.extend(Path(folder, name).relative_to(task_dir) for name in sorted(files) if name.endswith(".py"))
    if len(found) > MAX_PYTHON_FILES:
        raise ConfigError(f"{task_dir} holds {len(found)} .py files (a virtual environment?); a task folder's "
                          f"bundle takes at most {MAX_PYTHON_FILES}: move other code out of the folder")
    return found


def check_hooks_inside(blueprint_args: Mapping[str, Any], task_dir: Path) -> None:
    """A hooks file outside the task folder, or in a folder the bundle leaves out, would not travel with
    the bundle: refuse it."""
    value = blueprint_args.get(HOOKS_ARG)
    if value and not Path(str(value)).resolve().is_relative_to(task_dir.resolve()):
        raise ConfigError(f"mephisto.blueprint.{HOOKS_ARG} must be inside the task folder {task_dir} "
                          f"(it is stored with the run), got {value}")
    if value:
        _check_bundled(f"mephisto.blueprint.{HOOKS_ARG} {value}", Path(str(value)), task_dir)


def check_script_inside(script: Mapping[str, Any], task_dir: Path) -> None:
    """A task script outside the task folder would not travel with the bundle: refuse it."""
    path = Path(str(script.get("path") or ""))
    if not path.resolve().is_relative_to(task_dir.resolve()):
        raise ConfigError(f"the task script {path} must be inside the task folder {task_dir} "
                          "(it is stored with the run)")
    _check_bundled(f"the task script {path}", path, task_dir)


def _check_bundled(what: str, path: Path, task_dir: Path) -> None:
    """Refuse a module the bundle would leave out: in an environment, cache or hidden folder."""
    folders = path.resolve().relative_to(task_dir.resolve()).parts[:-1]
    left_out = next((f for f in folders if _left_out(f)), None)
    if left_out is not None:
        raise ConfigError(f"{what} is in a {left_out}/ folder, which a run's bundle leaves out (environments, "
                          f"caches and hidden folders): move it elsewhere in the task folder")


def review_bundle_source(value: str | None) -> Path | None:
    """The review bundle a config names (``task_source_review``), when it was built: Mephisto's configs
    name it whether or not ``npm run build:review`` was run, and without it a submission is shown as its
    inputs and outputs."""
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_file() else None


def pack(build_dir: Path, task_dir: Path, out: Path, review_bundle: Path | None = None) -> str:
    """Write the bundle of these folders (and the review bundle) to ``out``; return its key."""
    entries = [(f"{BUILD_DIR}/{p.relative_to(build_dir).as_posix()}", p)
               for p in sorted(build_dir.rglob("*")) if p.is_file()]
    entries += [(f"{PYTHON_DIR}/{rel.as_posix()}", task_dir / rel) for rel in python_files(task_dir)]
    if review_bundle is not None:
        entries.append((f"{REVIEW_DIR}/{REVIEW_BUNDLE}", review_bundle))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in entries:
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as data:
                tar.addfile(info, data)
    return f"{KEY_PREFIX}{sha256_of(out)}.tar"


def store_bundle(storage: Storage, build_dir: Path, task_dir: Path, review_bundle: Path | None = None) -> str:
    """Pack and store a run's bundle (once: an identical bundle is already there); return its key."""
    with tempfile.TemporaryDirectory(prefix="mephisto-dist-bundle-") as scratch:
        tar_path = Path(scratch) / "bundle.tar"
        key = pack(build_dir, task_dir, tar_path, review_bundle)
        if not storage.exists(key):
            with tar_path.open("rb") as data:
                storage.put(key, data)
    return key


@dataclass(frozen=True)
class RunFiles:
    """Where a run's served files are on this machine, and its hooks."""

    build_dir: Path
    hooks: TaskHooks


def run_files(cache: BundleCache, run: TaskRun) -> RunFiles:
    """A run's files from its bundle (fetched on first use); a run made before bundles existed uses its
    build folder and hooks path as they were recorded."""
    parsed = RunConfig.parse(run.config)
    blueprint_args, script = parsed.blueprint.args, parsed.script
    if script is not None:
        return _script_run_files(cache, run, script)
    if run.bundle_key is None:
        return RunFiles(Path(run.build_dir), hooks_for(blueprint_args))
    root = cache.local(run.bundle_key)
    return RunFiles(root / BUILD_DIR, bundled_hooks(root, run.task_dir, blueprint_args))


def _script_run_files(cache: BundleCache, run: TaskRun, script: Mapping[str, Any]) -> RunFiles:
    """A task script's run: its hooks are the script's callbacks, captured by the stand-in for the
    ``mephisto`` modules, loaded here only (a run from a config alone, and a web server's start, never
    need it)."""
    from mephisto_dist.compat.runner import captured_hooks

    if run.bundle_key is None:
        return RunFiles(Path(run.build_dir), captured_hooks(script))
    root = cache.local(run.bundle_key)
    # The bundle's copy of the script, so every machine runs what was launched.
    relative = Path(str(script["path"])).resolve().relative_to(Path(run.task_dir).resolve())
    return RunFiles(root / BUILD_DIR, captured_hooks(script, str(root / PYTHON_DIR / relative)))


def bundled_hooks(root: Path, task_dir: str, blueprint_args: Mapping[str, Any]) -> TaskHooks:
    """The hooks module named by the run's config, imported from the bundle's copy of the task folder."""
    value = blueprint_args.get(HOOKS_ARG)
    if not value:
        return NO_HOOKS
    relative = Path(str(value)).relative_to(task_dir) if Path(str(value)).is_relative_to(task_dir) else \
        Path(str(value)).resolve().relative_to(Path(task_dir).resolve())
    python = root / PYTHON_DIR
    return load_hooks(str(python / relative), str(python))


def run_bundle_path(cache: BundleCache, session: Session, run_id: int) -> Path:
    """The local folder of a run's bundle (``build/`` and ``python/``), fetched on first use."""
    key = session.scalar(select(TaskRun.bundle_key).where(TaskRun.id == run_id))
    if key is None:
        if session.get(TaskRun, run_id) is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        raise NotFoundError(f"task run {run_id} has no bundle (it was created before bundles existed)")
    return cache.local(key)




def run_review_bundle(cache: BundleCache, session: Session, run_id: int) -> Path | None:
    """The run's review bundle on this machine: its bundle's copy; for a run whose bundle has none (made
    before review bundles travelled with it), the file its config names, if this machine has it; else
    None (the run has no review bundle, or it was not built)."""
    run = session.get(TaskRun, run_id)
    if run is None:
        raise NotFoundError(f"task run {run_id} does not exist")
    named = RunConfig.parse(run.config).blueprint.task_source_review
    if not named:
        return None
    if run.bundle_key is not None:
        bundled = cache.local(run.bundle_key) / REVIEW_DIR / REVIEW_BUNDLE
        if bundled.is_file():
            return bundled
    return review_bundle_source(named)
