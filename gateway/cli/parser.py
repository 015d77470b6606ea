"""The command line's grammar: every command, option and argument with the help text
users read (`--help`), the exit codes in its epilog, `--version`, and the completion
scripts (shtab) made from it. Parsing only: gateway.cli.commands runs what it parses.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["command_parser"]


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


def command_parser() -> argparse.ArgumentParser:
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
