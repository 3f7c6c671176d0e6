"""Keeping a Prolific requester's API token as Mephisto keeps it: ``~/.prolific/credentials`` (or
``PROLIFIC_CREDENTIALS_FILE``), a JSON object of requester name to token, mode 0600, replaced atomically.
Nothing else in mephisto-dist ever holds the token."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mephisto_dist.errors import ConfigError


def credentials_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("PROLIFIC_CREDENTIALS_FILE") or Path.home() / ".prolific" / "credentials").expanduser()


def _read(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"the Prolific credentials file {path} cannot be read: {error.strerror}") from None
    try:
        keys = json.loads(text) if text.strip() else {}
    except ValueError:
        raise ConfigError(f"the Prolific credentials file {path} is not a JSON object of name to API key") from None
    if not isinstance(keys, dict):
        raise ConfigError(f"the Prolific credentials file {path} is not a JSON object of name to API key")
    return {str(name): str(key) for name, key in keys.items()}


def has_key(name: str, path: Path | None = None) -> bool:
    return name in _read(path or credentials_file())


def api_key(name: str, path: Path | None = None) -> str:
    target = path or credentials_file()
    key = _read(target).get(name)
    if not key:
        raise ConfigError(f"requester {name!r}: no Prolific API key under its name in {target}; register it again "
                          f"with its key (mephisto-dist register prolific name={name} api_key=...)")
    return key


def save_key(name: str, key: str, path: Path | None = None) -> Path:
    if not key.strip():
        raise ConfigError("api_key must not be empty")
    target = path or credentials_file()
    keys = _read(target)
    keys[name] = key.strip()
    _write(keys, target)
    return target


def delete_key(name: str, path: Path | None = None) -> Path | None:
    target = path or credentials_file()
    keys = _read(target)
    if keys.pop(name, None) is None:
        return None
    _write(keys, target)
    return target


def _write(keys: dict[str, str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, scratch = tempfile.mkstemp(dir=target.parent, prefix=".credentials-")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(keys, out, indent=2, sort_keys=True)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
