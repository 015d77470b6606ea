"""Smaller hardening: warnings for an exposed listener behind a trusted MTA and for loose
secret files, no terminal controls in what the CLI prints, and In-Reply-To/References
within the 998-octet line limit."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli.commands import main
from gateway.plan.replies import Sender, render, trim_references
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.daemon import Daemon
from tests.test_trust_e2e import send, settled

# C0 (but line breaks and tabs), DEL, C1 and direction overrides: none may reach a terminal.
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n{body}', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("host", "authserv", "warned"),
    [
        ("0.0.0.0", "mx.example.org", True),
        ("192.0.2.10", "mx.example.org", True),
        ("127.0.0.1", "mx.example.org", False),
        ("0.0.0.0", None, False),
    ],
)
def test_check_config_warns_about_an_exposed_listener_behind_a_trusted_mta(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    host: str,
    authserv: str | None,
    warned: bool,
) -> None:
    """Anyone reaching a non-loopback listener writes the header a trusted MTA would."""
    trust = f'[trust]\ntrusted_authserv_id = "{authserv}"\n' if authserv else ""
    path = write_config(tmp_path, f'[smtp]\nhost = "{host}"\n{trust}')
    code, out, err = cli(capsys, "check-config", str(path))
    assert code == 0 and "OK" in out
    assert ("warning: smtp.host" in err) is warned, err


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        (0o644, "readable by every user"),
        (0o620, "writable by its group"),
        (0o666, "readable by every user and writable by everyone"),
        (0o600, None),
        (0o640, None),
    ],
)
def test_check_config_warns_about_secret_files_others_can_read_or_change(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mode: int,
    words: str | None,
) -> None:
    """A loose secret file is accepted, named with its mode; a private one says nothing."""
    key = tmp_path / "threading-key"
    key.write_text("k" * 32, encoding="utf-8")
    os.chmod(key, mode)
    path = write_config(tmp_path, '[threading]\nkey = { file = "threading-key" }\n')
    code, _, err = cli(capsys, "check-config", str(path))
    assert code == 0
    if words is None:
        assert "warning" not in err
    else:
        assert f"threading.key.file: {key} is {words} (mode {mode:04o})" in err
    assert "k" * 32 not in err


@pytest.mark.parametrize("argv", [("list",), ("show", "INC-1"), ("report", "INC-1")])
async def test_terminal_controls_from_mail_never_reach_cli_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    """C1 (U+009B CSI), ESC and a direction override in a report and a reply: `incidents
    list`, `show` and `report` show them as visible escapes, never as controls."""
    hostile = "Site down \u009b2J\u001b[31m \u202egnp.exe"
    raw = email_bytes(subject=hostile, body=f"Help {hostile}\r\nsecond line \u0085 end")
    async with running(make_config(tmp_path), ticking(IN_HOURS)) as app:
        await send(app.smtp_port or 0, raw, "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
        reply = email_bytes(subject="Re: [INC-1] Site down", body=f"Still down {hostile}")
        await send(app.smtp_port or 0, reply, "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
    capsys.readouterr()  # the daemon's own log lines
    path = tmp_path / "gateway.toml"
    path.write_text(f'[state]\ndir = "{tmp_path}"\n', encoding="utf-8")
    code, out, _ = cli(capsys, "incidents", *argv, "--config", str(path))
    assert code == 0 and "INC-1" in out
    assert not CONTROLS.search(out), repr(out)
    assert "\\u202e" in out


IDS = [f"<{n:02d}.{'x' * 60}@tenant.example>" for n in range(30)]
GIANT = "<" + "y" * 2000 + "@tenant.example>"


def reply_head(in_reply_to: str, references: list[str]) -> bytes:
    out = render(
        sender=Sender("emergency@gw.example", "Support", "gw.example", "loop"),
        to="alice@tenant.example",
        subject="Re: x",
        body="hello",
        message_id="<1.ack@gw.example>",
        in_reply_to=in_reply_to,
        references=references,
        now=datetime(2026, 11, 23, 10, tzinfo=UTC),
    )
    return out.data.split(b"\r\n\r\n", 1)[0]


def test_references_keep_the_first_and_the_latest_within_998_octets() -> None:
    """Thirty long ids: References keeps the root and the latest that fit in 998 octets."""
    head = reply_head(IDS[-1], IDS)
    [references] = [
        line
        for line in head.replace(b"\r\n ", b" ").split(b"\r\n")
        if line.startswith(b"References:")
    ]
    assert len(references) <= 998
    kept = references.removeprefix(b"References: ").decode().split(" ")
    assert kept[0] == IDS[0] and kept[-1] == IDS[-1] and len(kept) < len(IDS)
    assert kept[1:] == IDS[len(IDS) - len(kept) + 1 :]
    assert trim_references(IDS) == kept


def test_a_giant_message_id_never_makes_a_line_over_998_octets() -> None:
    """A 2,000-character parent id from the sender: left out of In-Reply-To and References."""
    head = reply_head(GIANT, [GIANT, *IDS[:3]])
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert b"In-Reply-To" not in head and b"yyyy" not in head and IDS[0].encode() in head


def test_the_daemon_logs_the_warnings_when_it_starts(tmp_path: Path) -> None:
    """The real daemon started with a world-readable secret file and an exposed listener
    behind a trusted MTA logs both as config.warning, without the secret, and runs."""
    key = tmp_path / "threading-key"
    key.write_text("s3cret-threading-key-0123456789", encoding="utf-8")
    os.chmod(key, 0o644)
    daemon = Daemon(
        tmp_path,
        '[threading]\nkey = { file = "threading-key" }\n'
        '[trust]\ntrusted_authserv_id = "mx.example.org"\n',
    )
    daemon.config.write_text(
        daemon.config.read_text().replace("[smtp]\n", '[smtp]\nhost = "0.0.0.0"\n'),
        encoding="utf-8",
    )
    try:
        daemon.start()
    finally:
        assert daemon.stop() == 0
    lines = [
        json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")
    ]
    problems = [e["problem"] for e in lines if e.get("event") == "config.warning"]
    assert any(p.startswith("smtp.host:") for p in problems), lines
    assert any(p.startswith("threading.key.file:") and "0644" in p for p in problems)
    assert "s3cret-threading-key" not in daemon.log.read_text()
