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
from pathlib import Path

import shtab
import structlog

from gateway.app import App, notify_failure
from gateway.cli import views
from gateway.cli.held import held_command
from gateway.cli.parser import command_parser
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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `chatops-gateway` console script."""
    args = command_parser().parse_args(argv)
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
        print(shtab.complete(command_parser(), shell=args.shell), end="")
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
