"""UID bookkeeping for the IMAP intake (pure): cursors, scan plans, UID sets, envelope sender."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from aioimaplib import Response

from adapters.imap_wire import parse_fetch, parse_search, parse_select
from gateway.config.model import ConfigError, parse_config
from gateway.plan.imapsync import Cursor, envelope_sender, imap_date, plan_scan, uid_set

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_same_uidvalidity_scans_above_the_cursor_and_filters_the_star_quirk() -> None:
    """`UID n:*` answers the last message even when nothing is new: it is filtered out."""
    scan = plan_scan(Cursor(7, 41, AT), 7)
    assert (scan.criteria, scan.reason) == ("UID 42:*", "new")
    assert scan.new([41]) == []
    assert scan.new([44, 42, 43]) == [42, 43, 44]


def test_first_start_takes_unseen_mail() -> None:
    """Without a cursor only unseen mail is a backlog."""
    assert plan_scan(None, 7).criteria == "UNSEEN"


def test_uidvalidity_change_rescans_unseen_and_recent_mail() -> None:
    """A new UIDVALIDITY re-scans unseen mail and mail since the day before the last advance."""
    scan = plan_scan(Cursor(7, 41, AT), 8)
    assert (scan.criteria, scan.reason) == ("OR UNSEEN SINCE 22-Nov-2026", "uidvalidity_changed")
    assert scan.new([1, 2]) == [1, 2]


def test_cursor_round_trip_and_advance() -> None:
    """The stored form reads back; advancing never goes backwards; junk reads as no cursor."""
    cursor = Cursor(7, 41, AT)
    assert Cursor.loads(cursor.dumps()) == cursor
    assert cursor.advanced([3, 50], AT).last_uid == 50
    assert cursor.advanced([3], AT) is cursor
    assert Cursor.loads("{not json") is None and Cursor.loads(None) is None


def test_uid_set_compresses_ranges() -> None:
    """Consecutive UIDs become ranges."""
    assert uid_set([5, 1, 2, 3, 9, 10]) == "1:3,5,9:10"
    assert imap_date(date(2026, 2, 1)) == "01-Feb-2026"


@pytest.mark.parametrize(
    ("raw", "sender"),
    [
        (
            b"Return-Path: <bob@x.example>\r\nFrom: Alice <alice@x.example>\r\n\r\nhi",
            "bob@x.example",
        ),
        (b"Return-Path: <>\r\nFrom: MAILER-DAEMON <md@x.example>\r\n\r\nbounce", ""),
        (b"From: Alice <alice@x.example>\r\n\r\nhi", "alice@x.example"),
        (b"Subject: no sender\r\n\r\nhi", ""),
    ],
)
def test_envelope_sender(raw: bytes, sender: str) -> None:
    """Return-Path wins (a null one stays null, so bounces stay recognisable), else From."""
    assert envelope_sender(raw) == sender


def test_parse_answers() -> None:
    """SELECT, SEARCH and FETCH answers as aioimaplib returns them (UID before or after)."""
    select = Response(
        "OK",
        [
            b"2 EXISTS",
            b"OK [UIDVALIDITY 99] UIDs valid",
            b"OK [UIDNEXT 3] Predicted next UID",
            b"Select completed",
        ],
    )
    assert parse_select(select) == (99, 3)
    assert parse_search(Response("OK", [b"2 5", b"Search completed"])) == [2, 5]
    assert parse_search(Response("OK", [b"", b"Search completed"])) == []
    fetch = Response(
        "OK",
        [
            b"1 FETCH (UID 4 BODY[] {2}",
            bytearray(b"hi"),
            b")",
            b"2 FETCH (FLAGS (\\Seen))",
            b"3 FETCH (BODY[] {2}",
            bytearray(b"yo"),
            b" UID 6)",
            b"Fetch completed",
        ],
    )
    assert parse_fetch(fetch) == [(4, b"hi"), (6, b"yo")]


def _box(**over: object) -> dict[str, object]:
    return {
        "name": "ops",
        "host": "imap.example.org",
        "user": "gw",
        "password": {"value": "s"},
        **over,
    }


def test_config_refuses_plaintext_off_loopback() -> None:
    """Plain text needs allow_plaintext and a loopback host; errors name their TOML path."""
    with pytest.raises(ConfigError) as err:
        parse_config({"imap": [_box(tls="none", allow_plaintext=True)]})
    assert err.value.errors == ['imap[0]: tls = "none" is only allowed for a loopback host']
    with pytest.raises(ConfigError) as err:
        parse_config({"imap": [_box(host="127.0.0.1", tls="none")]})
    assert "allow_plaintext" in err.value.errors[0]
    config = parse_config({"imap": [_box(host="::1", tls="none", allow_plaintext=True)]})
    assert config.imap[0].effective_port() == 143
    assert parse_config({"imap": [_box()]}).imap[0].effective_port() == 993


def test_config_checks_names_renewal_and_secret_files(tmp_path: Path) -> None:
    """Names are unique, IDLE is renewed at most every 10 minutes, secret files must exist."""
    with pytest.raises(ConfigError) as err:
        parse_config({"imap": [_box(), _box(idle_renew_s=1800)]}, base_dir=tmp_path)
    text = "\n".join(err.value.errors)
    assert "imap[1].idle_renew_s" in text
    with pytest.raises(ConfigError) as err:
        parse_config({"imap": [_box(), _box()]})
    assert "own 'name'" in err.value.errors[0]
    with pytest.raises(ConfigError) as err:
        parse_config({"imap": [_box(password={"file": "missing"})]}, base_dir=tmp_path)
    assert err.value.errors[0].startswith("imap[0].password.file: cannot read secret file")
