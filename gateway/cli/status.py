"""`chatops-gateway status`: ask the running daemon's status endpoint and summarise it.

The address is the one the daemon wrote to its state folder when it started (so a port
chosen by the system is found too), else the configured one. The daemon that answers must
serve the same state: its instance id (made once per database) must be the one stored in the
state folder this configuration names, or `status` says it reached another daemon. Returns
the CLI's exit code: 0 healthy, 1 unhealthy, not running or another daemon, 2 when the
endpoint is turned off or there is no state yet.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

from gateway.cli import views
from gateway.config.model import Config
from gateway.run import health
from gateway.run.service import INSTANCE_KEY, endpoint_file

_SHOWN = (
    "chatops_messages_accepted_total",
    "chatops_messages_rejected_total",
    "chatops_triage_total",
    "chatops_pages_sent_total",
    "chatops_replies_sent_total",
    "chatops_tickets_opened_total",
    "chatops_outbox_failures_total",
    "chatops_sla_reminders_total",
    "chatops_sla_breaches_total",
    "chatops_reconnects_total",
    "chatops_reloads_total",
)


def base_url(config: Config) -> str:
    """The status endpoint of the daemon using this configuration."""
    try:
        written = endpoint_file(config).read_text(encoding="utf-8").strip()
    except OSError:
        written = ""
    if written.startswith("http://"):
        return written
    return f"http://{config.http.host}:{config.http.port}"


def _get(url: str) -> tuple[int, bytes]:
    # Only our own http:// endpoint is ever opened here (see base_url).
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:  # 503 still carries the report
        return exc.code, exc.read()


def parse_counters(text: str) -> dict[str, float]:
    """Series of the counters worth showing, from the exposition text (zero ones left out)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series.partition("{")[0] in _SHOWN and float(value):
            out[series] = float(value)
    return out


def status_command(config: Config, *, as_json: bool = False) -> int:
    """Print the daemon's health; see the module docstring for the exit codes."""
    if not config.http.enabled:
        print(
            "chatops-gateway: the status endpoint is turned off ([http] enabled = false)",
            file=sys.stderr,
        )
        return 2
    with views.open_readonly(config) as reader:  # no state yet: UsageError, exit 2
        instance = reader.kv_get(INSTANCE_KEY)
    url = base_url(config)
    try:
        _, body = _get(f"{url}/healthz")
        report: dict[str, Any] = json.loads(body)
        _, metrics_text = _get(f"{url}/metrics")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(
            f"chatops-gateway: the daemon is not running (no answer at {url}: {reason})",
            file=sys.stderr,
        )
        return 1
    if instance is None or report.get("instance") != instance:
        print(
            f"chatops-gateway: the daemon answering at {url} is not the one using "
            f"{config.state_dir()} (instance {report.get('instance')!r}, expected "
            f"{instance!r}); is it running with this configuration?",
            file=sys.stderr,
        )
        return 1
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(health.text(report, parse_counters(metrics_text.decode())))
    return 0 if report.get("healthy") else 1
