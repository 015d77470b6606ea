"""Smaller hardening: warnings for an exposed listener behind a trusted MTA and for loose
secret files, no terminal controls in what the CLI prints, and In-Reply-To/References
within the 998-octet line limit."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.replies import Sender, render, trim_references
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
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


async def test_terminal_controls_from_mail_never_reach_cli_output(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """C1 (U+009B CSI), ESC and a direction override in subject and body: `incidents list`,
    `show` and `report` show them as visible escapes."""
    hostile = "Site down \u009b2J\u001b[31m \u202egnp.exe"
    raw = email_bytes(subject=hostile, body=f"Help {hostile}\r\nsecond line \u0085 end")
    config = make_config(tmp_path)
    async with running(config, ticking(IN_HOURS)) as app:
        await send(app.smtp_port or 0, raw, "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
        reply = email_bytes(subject="Re: [INC-1] Site down", body=f"Still down {hostile}")
        await send(app.smtp_port or 0, reply, "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
    path = write_config(tmp_path, "")
    path.write_text(f'[state]\ndir = "{tmp_path}"\n', encoding="utf-8")
    outputs = []
    for argv in (("list",), ("show", "INC-1"), ("report", "INC-1")):
        code, out, _ = cli(capsys, "incidents", *argv, "--config", str(path))
        assert code == 0, argv
        outputs.append(out)
    for out in outputs:
        assert not CONTROLS.search(out), repr(out)
    assert "\\u202e" in outputs[1] and "Still down" in outputs[1]


def test_references_and_in_reply_to_stay_within_998_octets() -> None:
    """Thirty long ids: References keeps the first and the latest that fit; a giant parent
    id is left out; no header line is longer than 998 octets."""
    ids = [f"<{n:02d}.{'x' * 60}@tenant.example>" for n in range(30)]
    kept = trim_references(ids)
    assert kept[0] == ids[0] and kept[-1] == ids[-1] and len(kept) < len(ids)
    assert kept[1:] == ids[len(ids) - len(kept) + 1 :]
    assert len(("References: " + " ".join(kept)).encode()) <= 998
    giant = "<" + "y" * 2000 + "@tenant.example>"
    out = render(
        sender=Sender("emergency@gw.example", "Support", "gw.example", "loop"),
        to="alice@tenant.example",
        subject="Re: x",
        body="hello",
        message_id="<1.ack@gw.example>",
        in_reply_to=giant,
        references=[giant, *ids],
        now=datetime(2026, 11, 23, 10, tzinfo=UTC),
    )
    head = out.data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    unfolded = head.replace(b"\r\n ", b" ").split(b"\r\n")
    [references] = [line for line in unfolded if line.startswith(b"References:")]
    assert len(references) <= 998 and ids[0].encode() in references
    assert b"In-Reply-To" not in head and b"yyyy" not in head
