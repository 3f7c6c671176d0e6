"""Building a task's React webapp as Mephisto's ``build_custom_bundle`` does: ``npm install``, the
optional post-install script, then ``npm run dev`` in ``TASK_DIR/webapp``, skipped while
``webapp/build/bundle.js`` is newer than every source file (``node_modules`` and ``build`` aside)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

from mephisto_dist.errors import ConfigError

IGNORED_DIRS: Final = frozenset({"node_modules", "build"})


def bundle_path(task_dir: str | Path) -> Path:
    return Path(task_dir) / "webapp" / "build" / "bundle.js"


def bundle_is_current(webapp: Path, bundle: Path) -> bool:
    if not bundle.is_file():
        return False
    built_at = bundle.stat().st_mtime
    for root, dirs, files in os.walk(webapp):
        dirs[:] = [d for d in dirs if not (Path(root) == webapp and d in IGNORED_DIRS)]
        for name in files:
            if (Path(root) / name).stat().st_mtime > built_at:
                return False
    return True


def build_bundle(task_dir: str | Path, *, force_rebuild: bool, post_install_script: str | None,
                 log_path: Path, say: Callable[[str], None]) -> Path:
    """Build (or keep) the bundle and return its path; npm's output goes to ``log_path``."""
    webapp = Path(task_dir).expanduser().resolve() / "webapp"
    bundle = bundle_path(webapp.parent)
    if not webapp.is_dir():
        raise ConfigError(f"build_custom_bundle: no webapp folder at {webapp}")
    if not force_rebuild and bundle_is_current(webapp, bundle):
        return bundle
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise ConfigError(f"build_custom_bundle needs {tool}, which is not on PATH "
                              f"(install Node.js and npm to build {webapp})")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"building the webapp bundle in {webapp} (npm install, npm run dev); npm output in {log_path}")
    steps = [["npm", "install", "--no-audit", "--no-fund"]]
    if post_install_script:
        steps.append(["bash", post_install_script])
    steps.append(["npm", "run", "dev"])
    with log_path.open("ab") as log:
        for command in steps:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            code = subprocess.run(command, cwd=webapp, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, check=False).returncode
            if code != 0:
                raise ConfigError(f"build_custom_bundle: `{' '.join(command)}` failed in {webapp} "
                                  f"(exit {code}); see {log_path}")
    if not bundle.is_file():
        raise ConfigError(f"build_custom_bundle: `npm run dev` did not write {bundle}")
    return bundle
