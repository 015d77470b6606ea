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
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

from gateway.cli import views
from gateway.cli.views import UsageError
from gateway.config.model import Config, load_config
from gateway.plan.unreadable import head_of
from gateway.read_ports import HeldRow

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
    with views.open_readonly(config) as reader:
        items = [describe(r) for r in reader.held()]
    print(json.dumps(items, indent=2) if as_json else table(items))
    return 0


def release_command(config: Config, ids: Sequence[int], now: datetime) -> int:
    """Release each message; UsageError (exit 2) naming those that were not held."""
    with views.open_for_operator(config) as operator:
        return _released([(i, operator.release_held(i, now)) for i in ids])


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


def held_command(args: argparse.Namespace) -> int:
    """`held list` or `held release` (argparse's namespace from gateway.cli)."""
    config = load_config(args.config)
    if args.held_command == "list":
        return list_command(config, as_json=args.json)
    return release_command(config, args.ids, datetime.now(UTC))
