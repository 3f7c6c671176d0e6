"""On a terminal, ``mephisto-dist run`` draws a live table; the Ctrl-C messages must stay on screen above
it. The run gets a real pseudo-terminal and its output is played into a terminal emulator (pyte), so the
test reads the screen a user would see, cursor movements and redraws included."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import httpx
import pyte
import pytest

from tests.browser import REPO, free_port, user_env

pytestmark = pytest.mark.system

ROWS, COLUMNS = 50, 130


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env,
                                        cwd=REPO, start_new_session=True)
        os.close(follower)
        self.output = b""

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process closed the terminal
                    return
                if not chunk:
                    return
                self.output += chunk

    def screen(self) -> str:
        screen = pyte.Screen(COLUMNS, ROWS)
        pyte.ByteStream(screen).feed(self.output)
        return "\n".join(line.rstrip() for line in screen.display)

    def wait_for_screen(self, needle: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.read(0.2)
            shown = self.screen()
            if needle in shown:
                return shown
            if self.process.poll() is not None:
                self.read(0.5)
                break
        raise AssertionError(f"{needle!r} is not on the screen:\n{self.screen()}")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        os.close(self.master)


def test_ctrl_c_messages_stay_above_the_live_table(tmp_path: Path) -> None:
    port = free_port()
    env = {**user_env(tmp_path / "data"), "TERM": "xterm", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)}
    terminal = Terminal([sys.executable, "-m", "mephisto_dist.cli.app", "run", "examples/simple_static_task",
                         f"mephisto.architect.port={port}", f"mephisto.task.task_name=tty-{uuid.uuid4().hex[:8]}"],
                        env)
    try:
        terminal.wait_for_screen("worker_id=worker1")
        terminal.wait_for_screen("3 still open")  # the live table is up
        agent = httpx.post(f"http://127.0.0.1:{port}/request_agent", json={
            "provider_data": {"worker_name": "w1", "assignment_id": "a1"}}).json()["data"]["agent_id"]
        assert agent

        terminal.process.send_signal(signal.SIGINT)
        shown = terminal.wait_for_screen("Ctrl-C again to force quit")
        terminal.read(1.5)  # several refreshes of the table
        shown = terminal.screen()
        lines = shown.splitlines()
        stopping = next(i for i, line in enumerate(lines) if line.startswith("stopping: no more launches"))
        expired = lines.index("2 available unit(s) expired")
        waiting = lines.index("waiting on 1 units in flight; Ctrl-C again to force quit")
        table = next(i for i, line in enumerate(lines) if "0 of 3 units completed, 2 expired, 1 still open" in line)
        assert stopping < expired < waiting < table, shown

        terminal.process.send_signal(signal.SIGINT)
        shown = terminal.wait_for_screen("task run 1 finished")
        assert "force quit: disconnecting active workers and expiring every unit not submitted" in shown
        assert "2 available unit(s) expired" in shown and "Ctrl-C again to force quit" in shown
        assert terminal.process.wait(30) != 0
    finally:
        terminal.close()
