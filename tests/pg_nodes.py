"""Daemons on a shared PostgreSQL for the high-availability tests: each node is the real
daemon as a child process (tests/daemon.py) with `[state] backend = "postgresql"`, and the
tests read the shared database directly, to see what the CLI does not show (leases,
claims)."""

from __future__ import annotations

import json
import smtplib
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from tests.conftest import email_bytes
from tests.daemon import Daemon

T = TypeVar("T")
CLAIM_S = 10.0  # how long a node's claim on an outbox entry keeps the others off it
# Known tenants; every report its own incident (no storm joining, no global limit), so each
# one must page exactly once.
TRUST = (
    '[trust]\nallow_domains = ["tenant.example"]\n'
    "[limits]\nstorm_window_s = 0\nglobal_per_minute = 1000000\n"
)


def pg_node(
    folder: Path,
    dsn: str,
    name: str,
    lease_s: float = 3.0,
    extra: str = "",
    log_level: str = "info",
) -> Daemon:
    """A daemon (not started) whose state is the PostgreSQL database at `dsn`."""
    folder.mkdir(parents=True, exist_ok=True)
    d = Daemon(folder)
    d.config.write_text(
        f'[state]\ndir = "{folder / "state"}"\nbackend = "postgresql"\n'
        f'[state.postgresql]\ndsn = "{dsn}"\nnode = "{name}"\nlease_s = {lease_s}\n'
        f"connect_timeout_s = 2\nclaim_s = {CLAIM_S}\n"
        f"[smtp]\nport = {d.port}\ncommit_timeout_s = 5\n"
        f'[log]\nformat = "json"\nlevel = "{log_level}"\n[http]\nport = 0\n'
        f"[outbox]\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.5\npoll_interval_s = 0.5\n"
        f"{TRUST}{extra}"
    )
    return d


def wait_for(check: Callable[[], T], timeout: float = 30.0, step: float = 0.05) -> T:
    """Poll `check` until it returns something true, or the time is up (returns the last)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def send(d: Daemon, n: int, subject: str | None = None) -> tuple[int, bytes]:
    """One report over SMTP; returns the server's final code and text (never raises)."""
    sender = f"tenant{n}@tenant.example"
    raw = email_bytes(
        subject=subject or f"Service {n} is down",
        sender=sender,
        message_id=f"<ha-{n}@tenant.example>",
    )
    try:
        with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as smtp:
            smtp.sendmail(sender, ["emergency@localhost"], raw)
            return 250, b"ok"
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text
    except (OSError, smtplib.SMTPException) as exc:
        return 0, str(exc).encode()


def health(d: Daemon) -> dict[str, Any] | None:
    """The node's /healthz report (None while it does not answer)."""
    endpoint = d.folder / "state" / "http-endpoint"
    try:
        url = endpoint.read_text().strip() + "/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except urllib.error.HTTPError as exc:
        data = json.loads(exc.read())
        return data
    except OSError:
        return None


def query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on the shared database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql.encode(), args).fetchall()


def scalar(dsn: str, sql: str, *args: Any) -> Any:
    """The one value of a query."""
    return query(dsn, sql, *args)[0][0]


def stored_reports(dsn: str) -> list[int]:
    """The numbers of the reports (sent by `send`) stored in the inbox, with repeats."""
    return [
        int(n)
        for (n,) in query(
            dsn, "SELECT substring(convert_from(raw, 'UTF8') from '<ha-([0-9]+)@') FROM inbox"
        )
        if n is not None
    ]


def all_processed(dsn: str) -> int:
    """How many inbox messages are processed, or 0 while any is still pending."""
    pending, done = query(
        dsn,
        "SELECT COUNT(*) FILTER (WHERE state = 'pending'),"
        " COUNT(*) FILTER (WHERE state = 'done') FROM inbox",
    )[0]
    return 0 if pending else int(done)
