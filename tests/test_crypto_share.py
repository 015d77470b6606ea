"""The Matrix crypto store as files that move between nodes: a consistent copy of nio's
SQLite store and its trust files, written back privately (journals of the old copy gone),
shared only when changed, and never over the shared copy once the lease is lost. The
shared side here is a dictionary standing in for the database (the PostgreSQL side is
tested in tests/test_postgres_crypto_files.py, the whole path in tests/test_ha_e2ee.py)."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from adapters.matrix_crypto_share import CryptoShare, LeaseLost
from gateway.store.folder import read_folder, write_folder

DB = "@gw:m.example_DEVICE.db"
TRUST = "@gw:m.example_DEVICE.trusted_devices"


def _store(folder: Path, rows: int = 3) -> sqlite3.Connection:
    """A store as nio leaves it: an open database (kept open, as nio keeps it) and a
    trust file."""
    folder.mkdir(mode=0o700, exist_ok=True)
    conn = sqlite3.connect(folder / DB)
    conn.execute("CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY, pickle BLOB)")
    conn.executemany(
        "INSERT INTO sessions (pickle) VALUES (?)", [(b"p" * 100,) for _ in range(rows)]
    )
    conn.commit()
    (folder / TRUST).write_text("@eng:m.example DEV ed25519 key\n")
    return conn


def _rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
    finally:
        conn.close()


class Shared:
    """The shared copy, with a switch for "this node lost the lease"."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.saves: list[list[str]] = []
        self.held = True

    async def load(self) -> dict[str, bytes]:
        return dict(self.files)

    async def save(self, files: Mapping[str, bytes]) -> bool:
        if not self.held:
            return False
        self.saves.append(sorted(files))
        self.files.update(files)
        return True


def test_a_copy_written_back_is_the_same_store_and_private(tmp_path: Path) -> None:
    """The database read while open is complete; written into another folder it has the
    same rows, each file 0600 in a 0700 folder; leftovers of the old copy (a hot journal
    that would be rolled back onto it, a file the copy lacks) are removed."""
    conn = _store(tmp_path / "a")
    files = read_folder(tmp_path / "a")
    conn.close()
    assert set(files) == {DB, TRUST}
    other = tmp_path / "b"
    other.mkdir()
    (other / (DB + "-journal")).write_bytes(b"hot journal of an older copy")
    (other / "old_DEVICE.db").write_bytes(b"another device")
    write_folder(other, files)
    assert sorted(p.name for p in other.iterdir()) == sorted([DB, TRUST])
    assert _rows(other / DB) == 3
    assert (other / TRUST).read_text() == "@eng:m.example DEV ed25519 key\n"
    assert stat.S_IMODE(other.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in other.iterdir())


def test_a_name_that_leaves_the_folder_is_refused(tmp_path: Path) -> None:
    """Names come back from the database: one that is a path, hidden or a journal is
    never written."""
    for name in ("../escape.db", "/etc/passwd", ".hidden", "x.db-journal", ""):
        with pytest.raises(ValueError, match="not a plain file name"):
            write_folder(tmp_path / "f", {name: b"x"})
    assert not (tmp_path / "escape.db").exists()


async def test_only_what_changed_is_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first save shares both files; a save with nothing changed does not even copy
    the store; a commit to the database shares the database alone, a rewritten trust file
    the trust file alone."""
    conn = _store(tmp_path / "s")
    shared = Shared()
    share = CryptoShare(shared, tmp_path / "s")
    copies: list[int] = []

    def counted(folder: Path) -> dict[str, bytes]:
        copies.append(1)
        return read_folder(folder)

    monkeypatch.setattr("adapters.matrix_crypto_share.read_folder", counted)
    await share.restore()  # nothing shared yet: the local store is kept
    await share.save()
    await share.save()
    assert len(copies) == 1
    conn.execute("INSERT INTO sessions (pickle) VALUES (?)", (b"new",))
    conn.commit()
    await share.save()
    (tmp_path / "s" / TRUST).write_text("@eng:m.example DEV ed25519 key\n@eng:m.example D2 k\n")
    await share.save()
    conn.close()
    assert shared.saves == [sorted([DB, TRUST]), [DB], [TRUST]]
    assert len(copies) == 3


async def test_a_node_that_lost_the_lease_shares_nothing_and_says_so(tmp_path: Path) -> None:
    """Once the lease is elsewhere, save raises LeaseLost and the shared copy keeps what
    the new holder saved; had the refused change counted as shared, it would never be
    offered again."""
    conn = _store(tmp_path / "s")
    shared = Shared()
    share = CryptoShare(shared, tmp_path / "s")
    await share.save()
    conn.execute("INSERT INTO sessions (pickle) VALUES (?)", (b"late",))
    conn.commit()
    conn.close()
    shared.held = False
    before = dict(shared.files)
    with pytest.raises(LeaseLost):
        await share.save()
    assert shared.files == before
    shared.held = True
    await share.save()
    assert shared.saves[-1] == [DB]


async def test_a_node_taking_over_starts_from_the_shared_store(tmp_path: Path) -> None:
    """Node b's own, older copy (and its journal) is replaced by what node a shared."""
    shared = Shared()
    conn = _store(tmp_path / "a", rows=5)
    await CryptoShare(shared, tmp_path / "a").save()
    conn.close()
    _store(tmp_path / "b", rows=1).close()
    (tmp_path / "b" / (DB + "-journal")).write_bytes(b"stale")
    await CryptoShare(shared, tmp_path / "b").restore()
    assert _rows(tmp_path / "b" / DB) == 5
    assert not (tmp_path / "b" / (DB + "-journal")).exists()


def test_a_store_under_a_path_with_uri_characters_is_read(tmp_path: Path) -> None:
    """A server name with a port and a folder with '#' or '?' in its name: the database is
    still opened read-only at that path (not at a truncated one, which SQLite would create
    empty)."""
    folder = tmp_path / "state #1?"
    name = "@gw:m.example:8448_DEV%41.db"
    folder.mkdir()
    conn = sqlite3.connect(folder / name)
    conn.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, pickle BLOB)")
    conn.execute("INSERT INTO sessions (pickle) VALUES (x'01')")
    conn.commit()
    conn.close()
    files = read_folder(folder)
    assert list(files) == [name]
    write_folder(tmp_path / "copy", files)
    assert _rows(tmp_path / "copy" / name) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "state #1?"]
