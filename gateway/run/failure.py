"""The page sent when the service has failed for good (systemd's OnFailure= hook runs
`chatops-gateway notify-failure`): pure, the adapter sends it."""

from __future__ import annotations

import socket

from gateway.ports import PageRequest


def failure_page(
    unit: str, reason: str, source: str, severity: str, host: str | None = None
) -> PageRequest:
    """One PagerDuty-style page per host and unit (the dedup_key), so a unit that fails
    again while the alert is open does not page twice."""
    host = host or socket.gethostname()
    return PageRequest(
        dedup_key=f"chatops-gateway-failed/{host}/{unit}"[:255],
        summary=f"chatops-gateway is down on {host}: {unit} failed ({reason})"[:1024],
        severity=severity,
        source=source or host,
        details={
            "host": host,
            "unit": unit,
            "reason": reason,
            "what": "The emergency path (mail and chat to pages) is not running. "
            "See `journalctl -u " + unit + "` and `chatops-gateway status`.",
        },
    )
