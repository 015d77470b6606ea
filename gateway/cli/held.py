"""`chatops-gateway held list` and `held release ID…`: mail the rate limits hold, for operators.

A held message is not answered and pages nobody until released; releasing processes it as
if it had just arrived (triage at the time of release), exactly once: the running daemon
picks it up within a few seconds. The listing shows what the sender wrote in From and
Subject (read from the header only, control characters removed), the connecting client
and the reason it was held.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

from gateway.cli import views
from gateway.cli.views import UsageError
from gateway.config.model import Config, load_config
from gateway.plan.unreadable import head_of
from gateway.store import schema
from gateway.store.held import HeldRow, held_rows, release

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]+")


def _clean(value: object, limit: int = 80) -> str:
    return _UNSAFE.sub(" ", str(value or "")).strip()[:limit]


def describe(row: HeldRow) -> dict[str, Any]:
    """One held message for people: ids, envelope, client, From, Subject and reason."""
    try:
        head = BytesHeaderParser(policy=policy.compat32).parsebytes(head_of(row.raw))
        from_, subject = head.get("From", ""), head.get("Subject", "")
    except Exception:  # a header beyond reading is shown as empty, never a traceback
        from_, subject = "", ""
    return {
        "id": row.inbox_id,
        "received_at": row.received_at,
        "mailbox": row.mailbox,
        "envelope_from": _clean(row.mail_from, 254),
        "client": row.client,
        "from": _clean(from_, 254),
        "subject": _clean(subject, 200),
        "reason": _clean(row.reason, 200),
    }


def table(items: Sequence[dict[str, Any]]) -> str:
    """The held messages as a text table."""
    if not items:
        return "No held messages."
    lines = [f"{'ID':>6}  {'RECEIVED':<19}  {'CLIENT':<15}  {'FROM':<30}  SUBJECT / REASON"]
    for i in items:
        sender = _clean(i["from"] or i["envelope_from"], 30)
        lines.append(
            f"{i['id']:>6}  {str(i['received_at'])[:19]:<19}  "
            f"{_clean(i['client'] or '-', 15):<15}  {sender:<30}  "
            f"{_clean(i['subject'], 60)}"
        )
        lines.append(f"{'':>6}  held: {i['reason']}")
    lines.append(f"{len(items)} held. Release with: chatops-gateway held release ID")
    return "\n".join(lines)


def list_command(config: Config, *, as_json: bool) -> int:
    """Print the held messages; exit code 0."""
    if config.state.backend == "postgresql":
        from gateway.store.postgres import held as pg_held  # noqa: PLC0415  (psycopg only here)

        with _postgresql(config) as pg:
            items = [describe(r) for r in pg_held.held_rows(pg)]
    else:
        with views.open_readonly(config) as conn:
            items = [describe(r) for r in held_rows(conn)]
    print(json.dumps(items, indent=2) if as_json else table(items))
    return 0


def release_command(config: Config, ids: Sequence[int], now: datetime) -> int:
    """Release each message; UsageError (exit 2) naming those that were not held."""
    if config.state.backend == "postgresql":
        from gateway.store.postgres import held as pg_held  # noqa: PLC0415  (psycopg only here)

        with _postgresql(config) as pg:
            return _released([(i, pg_held.release(pg, i, now)) for i in ids])
    path = config.database_path()
    if not path.exists():
        raise UsageError(f"no state at {path}: has the daemon run with this configuration?")
    conn = schema.connect(str(path))
    try:
        return _released([(i, release(conn, i, now)) for i in ids])
    finally:
        conn.close()


def _released(outcomes: Sequence[tuple[int, str | None]]) -> int:
    problems = []
    for inbox_id, state in outcomes:
        if state is None:
            print(f"inbox message {inbox_id} released: the daemon processes it now")
        elif state == "unknown":
            problems.append(f"no inbox message {inbox_id}")
        else:
            problems.append(f"inbox message {inbox_id} is {state}, not held")
    if problems:
        raise UsageError("; ".join(problems))
    return 0


@contextmanager
def _postgresql(config: Config) -> Iterator[Any]:
    """A connection to the configured PostgreSQL database (UsageError if it does not answer)."""
    import psycopg  # noqa: PLC0415  (only the PostgreSQL backend needs it)

    pg = config.state.postgresql
    if pg is None:
        raise UsageError('[state] backend = "postgresql" needs [state.postgresql]')
    password = config.read_secret(pg.password) if pg.password is not None else None
    try:
        conn = psycopg.connect(
            pg.dsn,
            password=password,
            autocommit=True,
            connect_timeout=max(1, round(pg.connect_timeout_s)),
        )
    except psycopg.OperationalError:
        raise UsageError("cannot reach the PostgreSQL database of [state.postgresql]") from None
    with conn:
        try:
            yield conn
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
            raise UsageError(
                "the PostgreSQL database holds no state of this version: has the "
                "daemon run with this configuration?"
            ) from None
        except psycopg.OperationalError:
            raise UsageError("lost the PostgreSQL database of [state.postgresql]") from None


def held_command(args: argparse.Namespace) -> int:
    """`held list` or `held release` (argparse's namespace from gateway.cli)."""
    config = load_config(args.config)
    if args.held_command == "list":
        return list_command(config, as_json=args.json)
    return release_command(config, args.ids, datetime.now(UTC))
