"""The command line: the only place that exits the process, with documented exit codes.

Exit codes: 0 success; 1 failure (rule examples failed, the daemon crashed);
2 usage error, unreadable input or unknown reference; 3 invalid configuration or rulebook.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import shtab
import structlog

from gateway.app import App, notify_failure
from gateway.cli import views
from gateway.cli.held import held_command
from gateway.cli.status import status_command
from gateway.cli.views import UsageError
from gateway.config.bank_holidays import helper_dates
from gateway.config.model import Config, ConfigError, load_config
from gateway.config.warnings import config_warnings
from gateway.ports import PermanentError, TransientError
from gateway.read_ports import StateReader
from gateway.run import logs
from gateway.run.supervisor import GatewayFailed
from rules.alerts import check_alert_examples
from rules.book import (
    BankHolidayDates,
    Rulebook,
    RulebookError,
    default_rulebook,
    default_rulebook_text,
    load_rulebook,
)
from rules.engine import check_examples

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


def load_rules(path: Path | None, bank_holidays: BankHolidayDates | None = None) -> Rulebook:
    """The rulebook at `path`, or the packaged default (`bank_holidays`: see load_rulebook)."""
    if path is None:
        if bank_holidays is not None:
            return load_rulebook(default_rulebook_text(), bank_holidays)
        return default_rulebook()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulebookError([f"{path}: cannot read ({exc})"]) from None
    return load_rulebook(text, bank_holidays)


_EPILOG = """\
exit codes:
  0  success (status: the daemon is healthy)
  1  failure: rule examples failed, the daemon failed, or (status) unhealthy / not running
  2  usage error, unreadable input, unknown incident or outbox entry, no state yet
  3  invalid configuration or rulebook (the daemon refuses to start)

The read commands take --config FILE to find the state of a configured daemon; without it
they read the embedded defaults' state (./var, or $STATE_DIRECTORY under systemd).
Documentation: README.md and docs/ in the source distribution."""

_CONFIG_HELP = "the daemon's configuration file (TOML); default: the embedded defaults"


def _version() -> str:
    try:
        return metadata.version("chatops-gateway")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _with_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)


def _with_json(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _read_commands(sub: Any) -> None:
    """The commands that read (and release or retry) what the daemon keeps."""
    inc = sub.add_parser("incidents", help="read incidents (works while the daemon runs)")
    isub = inc.add_subparsers(dest="incidents_command", required=True, metavar="COMMAND")
    ilist = isub.add_parser("list", help="every incident, newest first")
    _with_json(ilist, "a list of incidents")
    _with_config(ilist)
    ishow = isub.add_parser("show", help="one incident with its clocks and timeline")
    ishow.add_argument("ref", metavar="REF", help="the incident's reference, e.g. INC-42")
    _with_json(ishow, "the incident")
    _with_config(ishow)
    irep = isub.add_parser("report", help="write an incident report draft (Markdown)")
    irep.add_argument("ref", metavar="REF", help="the incident's reference, e.g. INC-42")
    irep.add_argument(
        "--output", type=Path, metavar="FILE", help="write to this file instead of standard output"
    )
    _with_config(irep)
    out = sub.add_parser("outbox", help="pages, tickets and mail waiting, delivered or given up")
    osub = out.add_subparsers(dest="outbox_command", required=True, metavar="COMMAND")
    olist = osub.add_parser("list", help="outbox entries (never their contents)")
    olist.add_argument(
        "--state", choices=["pending", "done", "dead"], help="only entries in this state"
    )
    _with_json(olist, "a list of entries")
    _with_config(olist)
    oretry = osub.add_parser(
        "retry",
        help="send a dead entry back for delivery",
        description="Send a dead (given up) entry back for delivery with a "
        "fresh attempt count; the running daemon picks it up at "
        "its next outbox poll.",
    )
    oretry.add_argument("id", type=int, metavar="ID", help="the entry's id (see outbox list)")
    _with_config(oretry)
    held = sub.add_parser(
        "held",
        help="mail held by the rate limits: list, release",
        description="Mail held by the rate limits waits in the inbox, never "
        "answered or paged, until an operator releases it.",
    )
    hsub = held.add_subparsers(dest="held_command", required=True, metavar="COMMAND")
    hlist = hsub.add_parser("list", help="held messages, oldest first")
    _with_json(hlist, "a list of held messages")
    _with_config(hlist)
    hrel = hsub.add_parser("release", help="process held messages now, exactly once")
    hrel.add_argument(
        "ids", nargs="+", type=int, metavar="ID", help="the messages' ids (see held list)"
    )
    _with_config(hrel)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatops-gateway",
        description="Turns emergency mail and chat into triaged incidents, pages and tickets, "
        "and relays engineers' updates back to the people who reported.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the daemon (embedded defaults without --config)",
        description="Run the daemon in the foreground until SIGTERM/SIGINT; "
        "SIGHUP reloads the configuration and rulebook.",
    )
    _with_config(run)
    check = sub.add_parser(
        "check-config",
        help="validate a configuration file and its rulebook",
        description="Validate a configuration and its rulebook; print every "
        "problem with its TOML path (exit 3), warnings too.",
    )
    check.add_argument("file", type=Path, metavar="FILE", help="the configuration file (TOML)")
    tri = sub.add_parser(
        "triage",
        help="explain the decision for one .eml file; changes nothing",
        description="Explain what the gateway would decide for one message, "
        "without touching any state.",
    )
    tri.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="the message as an .eml file (RFC 5322); - reads standard input",
    )
    _with_json(tri, "one object (priority, page, ticket, reply, rule, reasons, ...)")
    tri.add_argument(
        "--at", metavar="ISO-8601", help="the instant to triage at, with an offset (default: now)"
    )
    tri.add_argument(
        "--mailbox",
        choices=["emergency", "support"],
        default="emergency",
        help="which address the message was sent to (default: emergency)",
    )
    _with_config(tri)
    tri.add_argument(
        "--alert",
        action="store_true",
        help="FILE is an alert webhook payload (docs/alerts.md), not an .eml file",
    )
    tri.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "alertmanager", "grafana", "pingdom", "generic"],
        help="the alert payload's kind (default: detected from its fields)",
    )
    rules = sub.add_parser("rules", help="rulebook tools")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    rtest = rsub.add_parser(
        "test",
        help="check every rule's examples",
        description="Check that every rule's examples give their expected "
        "priority (exit 1 if one does not).",
    )
    rtest.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="a rulebook (TOML); default: the packaged rulebook",
    )
    _read_commands(sub)
    status = sub.add_parser(
        "status",
        help="ask the running daemon how it is (health, counters)",
        description="Ask the daemon that uses this configuration's state how "
        "it is; exit 0 healthy, 1 unhealthy or not running, 2 "
        "endpoint turned off or no state yet.",
    )
    _with_config(status)
    _with_json(status, "the health report")
    mig = sub.add_parser(
        "migrate-state",
        help="copy a single-host SQLite state into PostgreSQL",
        description="Copy the SQLite state (incidents, timelines, outbox, "
        "cursors, thread keys, the threading key) into the empty "
        "PostgreSQL database of the configuration's "
        "[state.postgresql]. Stop the single-host daemon first.",
    )
    mig.add_argument(
        "--from-sqlite",
        type=Path,
        metavar="PATH",
        required=True,
        help="the SQLite state file (gateway.sqlite3 in the old state folder)",
    )
    mig.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        required=True,
        help='the configuration with [state] backend = "postgresql"',
    )
    fail = sub.add_parser(
        "notify-failure",
        help="page that the service failed for good (systemd OnFailure=)",
        description="Send one PagerDuty event (and ping [heartbeat] fail_url) "
        "saying the service failed; run by the unit's OnFailure= "
        "hook. Exit 0 when someone was notified, 1 otherwise.",
    )
    fail.add_argument(
        "--unit",
        default="chatops-gateway.service",
        metavar="NAME",
        help="the unit that failed (systemd's %%i)",
    )
    fail.add_argument(
        "--reason",
        default="the service failed and will not be restarted",
        metavar="TEXT",
        help="why, for the page",
    )
    _with_config(fail)
    comp = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script, e.g. "
        "`chatops-gateway completion bash > "
        "/etc/bash_completion.d/chatops-gateway`.",
    )
    comp.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `chatops-gateway` console script."""
    args = _parser().parse_args(argv)
    try:
        code = _dispatch(args)
    except ConfigError as exc:
        _errors("invalid configuration", exc.errors)
        code = EXIT_CONFIG
    except RulebookError as exc:
        _errors("invalid rulebook", exc.errors)
        code = EXIT_CONFIG
    except UsageError as exc:
        print(f"chatops-gateway: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    sys.exit(code)


def _errors(title: str, errors: Sequence[str]) -> None:
    print(f"chatops-gateway: {title}:", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:  # noqa: C901, PLR0911  (one return per command)
    if args.command == "run":
        return _run(load_config(args.config), args.config)
    if args.command == "check-config":
        config = load_config(args.file)
        load_rules(config.rules_file())
        for line in config_warnings(config):
            print(f"warning: {line}", file=sys.stderr)
        print(f"{args.file}: OK")
        return EXIT_OK
    if args.command == "triage":
        return _triage(args)
    if args.command == "rules":
        return _rules_test(args.file)
    if args.command == "incidents":
        return _incidents(args)
    if args.command == "notify-failure":
        return _notify_failure(load_config(args.config), args.unit, args.reason)
    if args.command == "status":
        return status_command(load_config(args.config), as_json=args.json)
    if args.command == "migrate-state":
        from gateway.cli.migrate import migrate_state  # noqa: PLC0415  (psycopg only here)

        return migrate_state(load_config(args.config), args.from_sqlite)
    if args.command == "completion":
        print(shtab.complete(_parser(), shell=args.shell), end="")
        return EXIT_OK
    if args.command == "held":
        return held_command(args)
    return _outbox(args)


def _load_both(path: Path) -> tuple[Config, Rulebook]:
    config = load_config(path)
    return config, load_rules(config.rules_file(), helper_dates)


def _run(config: Config, path: Path | None = None) -> int:
    # The daemon holds bank holidays as dates a helper process made (no `holidays` here).
    rulebook = load_rules(config.rules_file(), helper_dates)
    logs.configure(config.log.level, config.log.format)
    for line in config_warnings(config):
        structlog.get_logger("gateway.cli").warning("config.warning", problem=line)
    if path is None:
        structlog.get_logger("gateway.cli.commands").warning(
            "gateway.embedded_defaults",
            note="trial set-up: every sender may page, pages are only recorded in the store; "
            "run with --config FILE for a deployment",
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        app = App(config, rulebook, loader=None if path is None else partial(_load_both, path))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, app.request_reload)
        await app.run(stop)

    try:
        asyncio.run(main())
    except GatewayFailed as exc:  # a task it cannot run without ended: let systemd restart
        print(f"chatops-gateway: stopped: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _notify_failure(config: Config, unit: str, reason: str) -> int:
    try:
        done = asyncio.run(notify_failure(config, unit, reason))
    except (TransientError, PermanentError) as exc:
        print(f"chatops-gateway: could not notify anyone: {exc.reason}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"notified: {', '.join(done)}")
    return EXIT_OK


def _triage(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    book = load_rules(config.rules_file())
    try:
        raw = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    at = _instant(args.at)
    if args.alert:
        from gateway.cli.alert_views import triage_alert_json  # noqa: PLC0415
        from gateway.parse.alert_payloads import BadPayload  # noqa: PLC0415  (only for alerts)

        try:
            result = triage_alert_json(raw, args.kind, at, book)
        except BadPayload as exc:
            raise UsageError(f"not an alert payload: {exc.reason}") from None
    else:
        result = views.triage_json(raw, args.mailbox, at, book)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(views.triage_text(result))
    return EXIT_OK


def _instant(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--at: not an ISO-8601 instant: {value!r}") from None
    if at.tzinfo is None:
        raise UsageError("--at: give a time zone offset, e.g. 2026-11-23T10:00:00+00:00")
    return at


def _rules_test(path: Path | None) -> int:
    book = load_rules(path)
    failures = check_examples(book) + check_alert_examples(book)
    for line in failures:
        print(f"FAIL {line}")
    count = sum(len(rule.examples) for rule in book.rules) + sum(
        len(rule.examples) for rule in book.alert_rules
    )
    print(f"{count - len(failures)} of {count} examples give their expected priority")
    return EXIT_FAILURE if failures else EXIT_OK


def _incidents(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with views.open_readonly(config) as reader:
        if args.incidents_command == "list":
            items = views.list_incidents(reader)
            print(json.dumps(items, indent=2) if args.json else views.incidents_table(items))
            return EXIT_OK
        book = load_rules(config.rules_file())
        if args.incidents_command == "report":
            return _report(reader, args, book)
        item = views.show_incident(reader, args.ref, book, datetime.now(UTC))
        if item is None:
            raise UsageError(f"no incident {args.ref!r}")
        print(json.dumps(item, indent=2) if args.json else views.incident_text(item))
    return EXIT_OK


def _report(reader: StateReader, args: argparse.Namespace, book: Rulebook) -> int:
    text = views.incident_report(reader, args.ref, book, datetime.now(UTC))
    if text is None:
        raise UsageError(f"no incident {args.ref!r}")
    if args.output is None:
        print(text, end="")
        return EXIT_OK
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote {args.output}")
    return EXIT_OK


def _outbox(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.outbox_command == "retry":
        views.retry_outbox(config, args.id, datetime.now(UTC))
        print(f"outbox entry {args.id} sent back for delivery")
        return EXIT_OK
    with views.open_readonly(config) as reader:
        rows = views.outbox_list(reader, args.state)
    print(json.dumps(rows, indent=2) if args.json else views.outbox_table(rows))
    return EXIT_OK
