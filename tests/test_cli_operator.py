"""The command line as an operator meets it: version, help, completion, tables and JSON, and
`status` refusing to describe a daemon that serves another state."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from importlib import metadata
from pathlib import Path

import pytest
from aiohttp import web

from gateway.cli.commands import main
from gateway.cli.parser import command_parser as _parser
from gateway.cli.status import status_command
from gateway.config.model import parse_config
from gateway.run.service import INSTANCE_KEY, endpoint_file
from gateway.store.sqlite import SqliteStore as Store
from tests.fakes.http_base import serve_locally


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def _every_parser(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _every_parser(child)
    return found


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints the package's version and exits 0."""
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"chatops-gateway {metadata.version('chatops-gateway')}"


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """The top-level help is written for users and ends with the exit codes."""
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "Turns emergency mail and chat into triaged incidents" in out
    for line in ("0  success", "1  failure", "2  usage error", "3  invalid configuration"):
        assert line in out


def test_every_option_and_positional_is_described() -> None:
    """No argument of any command is left without a help text."""
    undescribed = [
        f"{parser.prog}: {action.dest}"
        for parser in _every_parser(_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert undescribed == []


def test_triage_help_says_dash_reads_standard_input(capsys: pytest.CaptureFixture[str]) -> None:
    """`triage --help` tells the reader that `-` means standard input."""
    _, out, _ = run(capsys, "triage", "--help")
    assert "- reads standard input" in " ".join(out.split())


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_knows_the_commands(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`completion SHELL` prints a script that completes the subcommands."""
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0
    for word in ("check-config", "incidents", "outbox", "status", "triage"):
        assert word in out


async def _state_with_dead_entry(state: Path) -> None:
    store = Store(state / "gateway.sqlite3")
    await store.open()
    try:
        await store.kv_set(INSTANCE_KEY, "abc123")
    finally:
        await store.close()
    conn = sqlite3.connect(state / "gateway.sqlite3")
    with conn:
        conn.execute(
            "INSERT INTO outbox (created_at, kind, payload, next_attempt_at, state,"
            " attempts, last_error) VALUES ('2026-11-23T10:00:00+00:00', 'page.trigger',"
            " '{}', '2026-11-23T10:00:00+00:00', 'dead', 1, 'HTTP 400: bad key')"
        )
    conn.close()


def test_outbox_list_prints_a_table_or_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outbox list` prints a table like `incidents list`; `--json` prints the entries."""
    asyncio.run(_state_with_dead_entry(tmp_path))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[state]\ndir = "{tmp_path}"\n')
    code, table, _ = run(capsys, "outbox", "list", "--config", str(cfg))
    assert code == 0
    header, row = table.splitlines()
    assert header.split()[:5] == ["ID", "KIND", "INC", "STATE", "TRIES"]
    assert "page.trigger" in row and "dead" in row and "HTTP 400: bad key" in row
    code, as_json, _ = run(capsys, "outbox", "list", "--json", "--config", str(cfg))
    [entry] = json.loads(as_json)
    assert code == 0 and entry["state"] == "dead" and entry["kind"] == "page.trigger"


def test_status_without_state_does_not_ask_any_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a folder with no state, `status` exits 2 saying so, whatever answers on the port."""
    config = parse_config({"state": {"dir": str(tmp_path / "nothing-here")}})
    with pytest.raises(Exception, match="no state at") as err:
        status_command(config)
    assert type(err.value).__name__ == "UsageError"


async def test_status_refuses_a_daemon_that_serves_another_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A healthy daemon answering at the recorded address but with another instance id is
    not described as this one: exit 1 and a message naming both ids."""
    await _state_with_dead_entry(tmp_path)
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response(
            {"healthy": True, "problems": [], "components": {}, "instance": "someone-else"}
        )

    async def metrics_text(_: web.Request) -> web.Response:
        return web.Response(text="")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_text)
    runner, url = await serve_locally(app)
    try:
        config = parse_config({"state": {"dir": str(tmp_path)}})
        endpoint_file(config).write_text(url + "\n")
        code = await asyncio.to_thread(status_command, config)
    finally:
        await runner.cleanup()
    _, err = capsys.readouterr()
    assert code == 1
    assert "someone-else" in err and "abc123" in err and "healthy" not in err
