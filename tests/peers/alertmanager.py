"""A real Prometheus Alertmanager on 127.0.0.1 that delivers webhooks to the gateway.

Debian's `prometheus-alertmanager` (0.25; installed by `scripts/test`, with `amtool`). One
server per test (fixture `alertmanager`, a factory: the webhook URL names the gateway's port,
which the test picks). Gossip is off (`--cluster.listen-address=` empty), grouping is by the
`group` label with short timers (group_wait 1 s, group_interval 2 s), and resolved alerts
are sent too. Alerts are fired with `amtool alert add` or posted in bulk to `/api/v2/alerts`;
an alert is resolved by posting it again with `endsAt` in the past.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from tests.peers.dovecot import free_port

BINARY = "prometheus-alertmanager"
START_TIMEOUT_S = 20.0

CONFIG = """\
route:
  receiver: gateway
  group_by: ['group']
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: 4h
receivers:
  - name: gateway
    webhook_configs:
      - url: '{url}'
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            type: Bearer
            credentials: '{token}'
"""


def installed() -> bool:
    """Whether Alertmanager and amtool are installed."""
    return shutil.which(BINARY) is not None and shutil.which("amtool") is not None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Alertmanager:
    """One Alertmanager process with its configuration and storage under `base`."""

    def __init__(
        self,
        base: Path,
        webhook_url: str,
        token: str,
        *,
        group_wait: str = "1s",
        group_interval: str = "2s",
    ) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._config = CONFIG.format(
            url=webhook_url, token=token, group_wait=group_wait, group_interval=group_interval
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def start(self) -> None:
        """Start and wait until `/-/ready` answers."""
        (self.base / "am.yml").write_text(self._config)
        (self.base / "data").mkdir(exist_ok=True)
        self._out = (self.base / "am.log").open("ab")
        self._proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={self.base / 'am.yml'}",
                f"--storage.path={self.base / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"alertmanager did not become ready: {self.logs()}")

    def stop(self) -> None:
        """SIGTERM the process group and wait."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(10)
        if self._out is not None:
            self._out.close()

    def logs(self, lines: int = 40) -> str:
        """The end of Alertmanager's log (for failure messages)."""
        path = self.base / "am.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_count(self, needle: str) -> int:
        """How many log lines contain `needle` (e.g. failed notification attempts)."""
        path = self.base / "am.log"
        return sum(needle in line for line in path.read_text(errors="replace").splitlines())

    async def amtool_add(self, labels: dict[str, str], annotations: dict[str, str]) -> None:
        """Fire one alert with `amtool alert add`."""
        args = [
            "amtool",
            f"--alertmanager.url={self.url}",
            "alert",
            "add",
            *(f"{k}={v}" for k, v in labels.items()),
            *(f"--annotation={k}={v}" for k, v in annotations.items()),
        ]
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"amtool failed: {out.decode(errors='replace')}")

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST alerts to the v2 API (blocking; call with asyncio.to_thread)."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 200:
                raise RuntimeError(f"alertmanager refused alerts: {resp.status}")

    @staticmethod
    def alert(
        labels: dict[str, str], *, summary: str = "", resolved: bool = False
    ) -> dict[str, Any]:
        """An API v2 alert; `resolved` sets endsAt in the past (which resolves it)."""
        now = datetime.now(UTC)
        item: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": summary},
            "generatorURL": "http://prometheus.example/graph",
            "startsAt": _iso(now - timedelta(minutes=5)),
        }
        item["endsAt"] = _iso(now - timedelta(seconds=1) if resolved else now + timedelta(hours=1))
        return item


@pytest.fixture
def alertmanager() -> Iterator[Callable[..., Alertmanager]]:
    """A factory: `alertmanager(webhook_url, token)` starts a real Alertmanager delivering
    to that URL (skipped if not installed, except in CI where it fails)."""
    if not installed():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "Alertmanager is not installed (./scripts/test installs "
                "prometheus-alertmanager): in CI the alert tests must run",
                pytrace=False,
            )
        pytest.skip("Alertmanager not installed: run ./scripts/test as root")
    started: list[Alertmanager] = []
    base = Path(tempfile.mkdtemp(prefix="am", dir="/tmp"))

    def start(webhook_url: str, token: str, **timers: str) -> Alertmanager:
        server = Alertmanager(base / str(len(started)), webhook_url, token, **timers)
        server.base.mkdir()
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
