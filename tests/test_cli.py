"""The command line: triage explanations, config checks, rule examples, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.commands import main
from rules.book import default_rulebook_text
from tests.conftest import email_bytes


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def test_triage_json_explains_a_p1_in_hours(tmp_path: Path, capsys) -> None:
    """triage --json prints the documented fields for a site-down mail on a Monday morning."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(email_bytes())
    code, out, _ = run(capsys, "triage", "--json", "--at", "2026-11-23T10:00:00+00:00", str(eml))
    result = json.loads(out)
    assert code == 0
    assert set(result) == {
        "priority",
        "page",
        "ticket",
        "reply",
        "rule",
        "reasons",
        "period",
        "respond_by",
        "next_update_by",
        "ignored",
    }
    assert (result["priority"], result["page"], result["period"]) == ("P1", True, "in_hours")
    assert result["respond_by"] == "2026-11-23T10:20:00+00:00"
    assert result["reasons"] and result["ignored"] is None


def test_triage_json_of_automatic_mail_is_ignored(tmp_path: Path, capsys) -> None:
    """An auto-reply has priority null and says why it is ignored."""
    eml = tmp_path / "auto.eml"
    eml.write_bytes(email_bytes(Auto_Submitted="auto-replied"))
    code, out, _ = run(capsys, "triage", "--json", str(eml))
    result = json.loads(out)
    assert code == 0 and result["priority"] is None and result["ignored"]
    assert not (result["page"] or result["reply"] or result["ticket"])


def test_triage_of_missing_file_exits_2(tmp_path: Path, capsys) -> None:
    """An unreadable input file exits 2 with a clear message, no traceback."""
    code, _, err = run(capsys, "triage", "--json", str(tmp_path / "nope.eml"))
    assert code == 2 and "cannot read" in err and "Traceback" not in err


def test_triage_rejects_naive_at(tmp_path: Path, capsys) -> None:
    """--at without a UTC offset is a usage error (exit 2)."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(email_bytes())
    code, _, err = run(capsys, "triage", "--at", "2026-11-23T10:00", str(eml))
    assert code == 2 and "offset" in err


def test_check_config_lists_every_error_with_its_path(tmp_path: Path, capsys) -> None:
    """check-config prints each problem with its TOML path and exits 3."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[smtp]\nport = 70000\nbogus = 1\n[mailboxes]\nemergency = ["nope"]\n')
    code, _, err = run(capsys, "check-config", str(bad))
    assert code == 3
    for path in ("smtp.port", "smtp.bogus", "mailboxes.emergency[0]"):
        assert path in err


def test_check_config_never_prints_secrets(tmp_path: Path, capsys) -> None:
    """A secret's value does not appear in check-config output, valid or not."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[pagerduty]\nrouting_key = { value = "SUPERSECRETKEY0123456789abcdefgh" }\nurl = 42\n'
    )
    code, out, err = run(capsys, "check-config", str(cfg))
    assert code == 3 and "SUPERSECRET" not in out + err


def test_check_config_reads_secret_from_credentials_directory(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A relative secret file is found in $CREDENTIALS_DIRECTORY; a missing one is an error."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pd-key").write_text("K" * 32 + "\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[pagerduty]\nrouting_key = { file = "pd-key" }\n')
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert run(capsys, "check-config", str(cfg))[0] == 0
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    code, _, err = run(capsys, "check-config", str(cfg))
    assert code == 3 and "pagerduty.routing_key.file" in err


def test_rules_test_passes_on_the_default_rulebook(capsys) -> None:
    """Every example in the shipped rulebook gives its expected priority."""
    code, out, _ = run(capsys, "rules", "test")
    assert code == 0 and "FAIL" not in out


def test_rules_test_fails_on_a_wrong_example(tmp_path: Path, capsys) -> None:
    """A rulebook whose example contradicts its rule exits 1 and names the example."""
    lines = default_rulebook_text().splitlines()
    n = next(i for i, ln in enumerate(lines) if 'expect = "P1"' in ln and not ln.startswith("#"))
    lines[n] = lines[n].replace('expect = "P1"', 'expect = "P4"')
    text = "\n".join(lines)
    book = tmp_path / "rules.toml"
    book.write_text(text)
    code, out, _ = run(capsys, "rules", "test", str(book))
    assert code == 1 and "FAIL" in out


def test_invalid_rulebook_exits_3(tmp_path: Path, capsys) -> None:
    """A broken rulebook is refused with its errors (exit 3)."""
    book = tmp_path / "rules.toml"
    book.write_text("[[rule]]\nid = 'x'\npriority = 'P9'\n")
    code, _, err = run(capsys, "rules", "test", str(book))
    assert code == 3 and "rule[0].priority" in err


def test_incidents_list_without_state_is_a_clear_error(tmp_path: Path, capsys) -> None:
    """Reading incidents before the daemon ever ran says so (exit 2)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n')
    code, _, err = run(capsys, "incidents", "list", "--config", str(cfg))
    assert code == 2 and "no state" in err
