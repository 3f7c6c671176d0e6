"""``register`` and ``requesters``: keys kept in the AWS shared credentials file only, reachability
asked of a real mturk-local process, and one-line refusals of bad input."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mturk_local_process import mturk_local

KEY_ID = "AKIDREGISTERTEST0001"
SECRET = "s3cr3t-never-to-be-seen-anywhere-0123456789"


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEPHISTO_DIST_", "AWS_"))}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(home / "data"), "COLUMNS": "250",
                "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws" / "credentials"),
                "AWS_CONFIG_FILE": str(home / "aws" / "config")})
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=120)


def secret_nowhere(home: Path, *outputs: subprocess.CompletedProcess[str]) -> None:
    """The secret is in the credentials file and nowhere else: not in any output, nor any file we wrote."""
    for result in outputs:
        assert SECRET not in result.stdout + result.stderr
    for path in (home / "data").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.system
def test_register_keeps_keys_in_a_profile_and_requesters_reaches_the_api(tmp_path: Path) -> None:
    with mturk_local(tmp_path / "turk.sqlite3", tmp_path / "turk.log") as url:
        made = cli(tmp_path, "register", "mturk_sandbox", "name=lab", f"access_key_id={KEY_ID}",
                   f"secret_access_key={SECRET}", f"endpoint_url={url}")
        assert made.returncode == 0, made.stderr
        assert "profile 'lab'" in made.stdout and url in made.stdout
        credentials = tmp_path / "aws" / "credentials"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert f"aws_secret_access_key = {SECRET}" in credentials.read_text()
        cli(tmp_path, "register", "mturk_sandbox", "name=gone", "endpoint_url=http://127.0.0.1:9")
        listed = cli(tmp_path, "requesters")
        assert listed.returncode == 0, listed.stderr
        lab = next(line for line in listed.stdout.splitlines() if "lab" in line)
        assert "yes, balance $10000.00" in lab and "profile 'lab'" in lab
        gone = next(line for line in listed.stdout.splitlines() if "gone" in line)
        assert "no:" in gone and "AWS environment" in gone
        # Registering again without keys keeps using the profile already saved.
        again = cli(tmp_path, "register", "mturk_sandbox", "name=lab", f"endpoint_url={url}")
        assert "profile 'lab'" in again.stdout
        secret_nowhere(tmp_path, made, listed, again)


@pytest.mark.parametrize(("args", "needle"), [
    (["mturk"], "name=NAME"),
    (["mturk", "name=x", f"access_key_id={KEY_ID}"], "both access_key_id and secret_access_key"),
    (["mturk", "name=x", "colour=red"], "unknown key 'colour'"),
    (["mturk", "name=x", "endpoint_url=ftp://x"], "endpoint_url 'ftp://x'"),
    (["prolific", "name=x"], "cannot register a requester for 'prolific'"),
    (["mturk", "name=x", f"secret_access_key{SECRET}"], "is not key=value"),
])
@pytest.mark.system
def test_bad_registrations_are_refused_in_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = cli(tmp_path, "register", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert SECRET not in result.stderr
