"""Commands facing a database or Redis they cannot reach: one ``error:`` line naming the URL (password
masked) and what to check, exit code 3 (bad input stays 2), no traceback. And error lines are never wrapped when the output
is not a terminal (a log keeps the whole path)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from mephisto_dist.errors.drivers import mask_url, translate
from mephisto_dist.queue import CeleryQueue
from mephisto_dist.settings import load_settings
from tests.conftest import PG_URL
from tests.factories import make_run
from tests.system import make_runtime

pytestmark = pytest.mark.system

UNREACHABLE = 3


def run_cli(data_dir: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_") and k != "COLUMNS"}
    env["MEPHISTO_DIST_DATA_DIR"] = str(data_dir)
    env.update({f"MEPHISTO_DIST_{k}": v for k, v in env_vars.items()})
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def pg(**parts: str | int) -> str:
    return make_url(PG_URL).set(**parts).render_as_string(hide_password=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("url, reason", [
    (lambda: pg(password="s3cret-pw", port=1), "port 1 failed: Connection refused"),
    (lambda: pg(password="s3cret-pw", database="no_such_database"), 'database "no_such_database" does not exist'),
    (lambda: pg(password="s3cret-pw", username="no_such_role"), 'role "no_such_role" does not exist'),
    (lambda: pg(password="s3cret-pw", host="no-such-host.invalid"), "no-such-host.invalid"),
], ids=["port", "database", "role", "host"])
def test_an_unreachable_database_is_one_line_with_the_password_masked(tmp_path: Path, url, reason: str) -> None:  # type: ignore[no-untyped-def]
    database_url = url()
    # Every command meets the same boundary; one unreachable URL is tried with several of them.
    commands = [["runs"], ["status", "1"], ["export", "--run", "1"], ["migrate"]] if "port 1 " in reason else [["runs"]]
    for command in commands:
        line = one_error_line(run_cli(tmp_path / "data", *command, DATABASE_URL=database_url), UNREACHABLE)
        assert "cannot reach the database at postgresql://" in line and reason in line, line
        assert "s3cret-pw" not in line and ":***@" in line
        assert "MEPHISTO_DIST_DATABASE_URL" in line


def test_an_unreachable_redis_is_one_line_with_the_password_masked(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    runtime = make_runtime(data, f"sqlite:///{data / 'mephisto-dist.db'}", redis_url)
    run = make_run(runtime.sessions)
    runtime.close()
    line = one_error_line(run_cli(data, "limits", str(run.run_id), "--max-concurrent", "3",
                                  REDIS_URL="redis://:s3cret-pw@127.0.0.1:1/0"), UNREACHABLE)
    assert re.match(r"error: .*Redis at redis://(:\*\*\*@)?127\.0\.0\.1:1/0.*Connection refused", line), line
    assert "s3cret-pw" not in line and "MEPHISTO_DIST_REDIS_URL" in line


def test_celery_cannot_reach_its_broker_is_translated_with_the_password_masked(tmp_path: Path) -> None:
    settings = load_settings({"MEPHISTO_DIST_REDIS_URL": "redis://:s3cret-pw@127.0.0.1:1/0",
                              "MEPHISTO_DIST_DATA_DIR": str(tmp_path)})
    queue = CeleryQueue(settings.broker_url)
    with pytest.raises(Exception) as raised:
        queue.enqueue("mephisto_dist.nothing")
    queue.close()
    translated = translate(raised.value, settings)
    assert translated is not None
    assert str(translated).startswith("cannot reach Redis at redis://:***@127.0.0.1:1/0: ")
    assert "Connection refused" in str(translated) and "s3cret-pw" not in str(translated)
    assert translate(ValueError("not a driver's"), settings) is None


def test_a_sqlite_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_error_line(run_cli(tmp_path / "data", "runs", DATABASE_URL=f"sqlite:///{blocker}/db.sqlite"))
    assert f"cannot create the folder of the SQLite database {blocker}/db.sqlite" in line


def test_error_lines_are_not_wrapped_when_not_a_terminal(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(f"folder-number-{i}" for i in range(12)), "missing-task")
    line = one_error_line(run_cli(tmp_path / "data", "run", str(deep)))
    assert str(deep) in line and len(line) > 200


def test_mask_url_hides_passwords_of_every_kind() -> None:
    assert mask_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("rediss://user:pw@h/0") == "rediss://user:***@h/0"
    assert mask_url("unix:///tmp/redis.sock") == "unix:///tmp/redis.sock"


def test_exit_codes_as_a_user_types_them(tmp_path: Path, redis_url: str) -> None:
    """Bad input is 2, a service out of reach 3, an unknown run 4: a script can tell them apart."""
    data = tmp_path / "data"
    runtime = make_runtime(data, f"sqlite:///{data / 'mephisto-dist.db'}", redis_url)
    run = make_run(runtime.sessions)
    runtime.close()
    database = {"DATABASE_URL": f"sqlite:///{data / 'mephisto-dist.db'}"}
    bad_pair = one_error_line(run_cli(data, "register", "mock", "name"), 2)
    assert "not key=value" in bad_pair
    closed_redis = one_error_line(run_cli(data, "limits", str(run.run_id), "--max-concurrent", "3",
                                          REDIS_URL="redis://127.0.0.1:1/0", **database), UNREACHABLE)
    assert "Redis at redis://127.0.0.1:1/0" in closed_redis and "Connection refused" in closed_redis
    unknown = one_error_line(run_cli(data, "status", "999999", REDIS_URL=redis_url, **database), 4)
    assert unknown == "error: task run 999999 does not exist"


def test_version_is_printed_and_exits_0(tmp_path: Path) -> None:
    from mephisto_dist import __version__

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env["MEPHISTO_DIST_DATA_DIR"] = str(tmp_path / "data")
    shown = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "--version"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, f"mephisto-dist {__version__}\n", "")
    assert not (tmp_path / "data").exists()  # nothing opened or made
