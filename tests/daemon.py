"""Running the real daemon as a child process, the way systemd does, for crash tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """`python -m gateway run --config FILE` as a child process."""

    def __init__(self, folder: Path, extra_toml: str = "") -> None:
        self.folder = folder
        self.port = free_port()
        self.config = folder / "gateway.toml"
        self.config.write_text(
            f'[state]\ndir = "{folder / "state"}"\n[smtp]\nport = {self.port}\n'
            f'[log]\nformat = "json"\nlevel = "warning"\n[http]\nport = 0\n{extra_toml}'
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "daemon.log"

    def spawn(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start the process, with extra environment variables, and return at once."""
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        out.close()
        return self.proc

    def start(self, timeout: float = 20.0, env: dict[str, str] | None = None) -> None:
        """Start and wait until the SMTP port answers."""
        self.spawn(env)
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("daemon did not start listening")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a CLI command against this daemon's configuration."""
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
