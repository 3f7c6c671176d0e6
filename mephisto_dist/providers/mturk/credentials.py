"""Keeping a requester's keys as AWS tools keep them: a named profile in the shared credentials file
(``AWS_SHARED_CREDENTIALS_FILE``, else ``~/.aws/credentials``), readable by its owner only. Nothing else
in mephisto-dist ever holds the secret."""

from __future__ import annotations

import configparser
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mephisto_dist.errors import ConfigError


def credentials_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials").expanduser()


def _read(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as error:
        raise ConfigError(f"the AWS credentials file {path} cannot be read: {error.__class__.__name__}") from None
    return parser


def has_profile(name: str, path: Path | None = None) -> bool:
    return _read(path or credentials_file()).has_section(name)


def save_profile(name: str, access_key_id: str, secret_access_key: str, path: Path | None = None) -> Path:
    """Write (or replace) profile ``name``; the file is replaced atomically and left mode 0600."""
    if not access_key_id.strip() or not secret_access_key.strip():
        raise ConfigError("access_key_id and secret_access_key must not be empty")
    target = path or credentials_file()
    parser = _read(target)
    if not parser.has_section(name):
        parser.add_section(name)
    parser.set(name, "aws_access_key_id", access_key_id.strip())
    parser.set(name, "aws_secret_access_key", secret_access_key.strip())
    _write(parser, target)
    return target


def delete_profile(name: str, path: Path | None = None) -> Path | None:
    """Delete profile ``name`` (its keys) from the shared credentials file; the file, or None when the
    profile was not there."""
    target = path or credentials_file()
    parser = _read(target)
    if not parser.remove_section(name):
        return None
    _write(parser, target)
    return target


def _write(parser: configparser.RawConfigParser, target: Path) -> None:
    """Replace the file atomically, left mode 0600."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, scratch = tempfile.mkstemp(dir=target.parent, prefix=".credentials-")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            parser.write(out)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
