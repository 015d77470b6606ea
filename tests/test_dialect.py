"""The two stores' SQL spellings (gateway.store.dialect) that shared queries rely on."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.store.dialect import POSTGRES, SQLITE

_INSERT = "INSERT INTO t (k, v) VALUES (?, ?)"


def test_insert_ignore_is_each_stores_own_spelling() -> None:
    """An ignoring INSERT is INSERT OR IGNORE on SQLite and ON CONFLICT DO NOTHING with %s
    parameters on PostgreSQL."""
    assert SQLITE.insert_ignore(_INSERT) == "INSERT OR IGNORE INTO t (k, v) VALUES (?, ?)"
    assert POSTGRES.insert_ignore(_INSERT) == (
        "INSERT INTO t (k, v) VALUES (%s, %s) ON CONFLICT DO NOTHING"
    )


def test_insert_ignore_leaves_the_row_already_there() -> None:
    """On SQLite the ignoring INSERT keeps the first row of a key and raises nothing."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    conn.execute(SQLITE.insert_ignore(_INSERT), ("a", "first"))
    conn.execute(SQLITE.insert_ignore(_INSERT), ("a", "second"))
    assert conn.execute("SELECT k, v FROM t").fetchall() == [("a", "first")]


def test_insert_ignore_refuses_what_is_not_an_insert() -> None:
    """Only an `INSERT INTO` statement can be made ignoring (anything else is a mistake)."""
    with pytest.raises(ValueError, match="INSERT INTO"):
        SQLITE.insert_ignore("UPDATE t SET v = ?")


def test_text_keys_go_in_parts_on_sqlite_and_one_array_on_postgresql() -> None:
    """Text keys (thread keys) split like ids: under SQLite's bound-value limit per part,
    one array on PostgreSQL."""
    keys = [f"<{n}@x>" for n in range(1201)]
    assert [len(p) for p in SQLITE.parts(keys)] == [500, 500, 201]
    assert [len(p) for p in POSTGRES.parts(keys)] == [1201]
    cond, args = SQLITE.in_ids("key", ("<a@x>", "<b@x>"))
    assert (cond, args) == ("key IN (?, ?)", ("<a@x>", "<b@x>"))
    cond, args = POSTGRES.in_ids("key", ("<a@x>",))
    assert (cond, args) == ("key = ANY(%s)", (["<a@x>"],))


def test_only_postgresql_locks_a_row_it_reads_to_change() -> None:
    """A read before a change locks its row on PostgreSQL; SQLite's write transaction
    already holds the database."""
    assert POSTGRES.row_lock == " FOR UPDATE"
    assert SQLITE.row_lock == ""
