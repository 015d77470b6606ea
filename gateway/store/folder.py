"""A local folder's files as bytes, read consistently and written back privately: how the
Matrix crypto store (a folder nio keeps: one SQLite database and small text files) moves
between nodes through the shared database, and into it when moving up from one host.

`read_folder` takes each SQLite database through SQLite's backup API (a consistent copy
even while another connection of this process has it open) and every other plain file as
it is; journals and temporary files are never part of it. `write_folder` puts files back
with mode 0600 in a 0700 folder, each written beside and renamed into place, after
removing any journal a database left behind (a hot journal would be rolled back onto the
restored file) and the files the copy does not have.

`FolderStamp` tells, in microseconds, whether anything in the folder may have changed since
it last looked (a database's `PRAGMA data_version`, seen from a connection of its own, moves
whenever another connection commits; any other file's size and modification time), so a
holder that saves after every post copies the store only when there is something new.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_SIDE_FILES = ("-journal", "-wal", "-shm")
_TEMP = ".part"


def digest(data: bytes) -> str:
    """What tells one version of a file from another."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def plain_name(name: str) -> bool:
    """A file name that stays inside the folder (never a path, never hidden or temporary)."""
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and not name.startswith(".")
        and not name.endswith(_TEMP)
        and not name.endswith(_SIDE_FILES)
    )


def read_folder(folder: Path) -> dict[str, bytes]:
    """Every file of `folder` by name (none when the folder does not exist)."""
    if not folder.is_dir():
        return {}
    files: dict[str, bytes] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not plain_name(path.name):
            continue
        files[path.name] = _database(path) if path.suffix == ".db" else path.read_bytes()
    return files


def _database(path: Path) -> bytes:
    source = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    copy = sqlite3.connect(":memory:")
    try:
        source.backup(copy)
        return copy.serialize()
    finally:
        copy.close()
        source.close()


def write_folder(folder: Path, files: Mapping[str, bytes]) -> None:
    """Make `folder` hold exactly `files` (see the module docstring)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for path in folder.iterdir():
        if path.is_file() and path.name not in files:
            path.unlink()
    for name, data in files.items():
        if not plain_name(name):
            raise ValueError(f"not a plain file name: {name!r}")
        path = folder / name
        part = folder / (name + _TEMP)
        fd = os.open(part, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FolderStamp:
    """What the folder's files look like now, cheaply (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._watchers: dict[str, tuple[int, sqlite3.Connection]] = {}  # name -> (inode, conn)

    def now(self) -> tuple[Any, ...]:
        """A value that differs whenever a file was added, removed, replaced or written."""
        if not self._folder.is_dir():
            return ()
        stamp: list[Any] = []
        for path in sorted(self._folder.iterdir()):
            if not path.is_file() or not plain_name(path.name):
                continue
            st = path.stat()
            if path.suffix == ".db":
                stamp.append((path.name, st.st_ino, self._data_version(path, st.st_ino)))
            else:
                stamp.append((path.name, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamp)

    def _data_version(self, path: Path, inode: int) -> int:
        watched = self._watchers.get(path.name)
        if watched is None or watched[0] != inode:  # new, or replaced by a restore
            if watched is not None:
                watched[1].close()
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            watched = self._watchers[path.name] = (inode, conn)
        return int(watched[1].execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        """Close the connections it watches through."""
        for _, conn in self._watchers.values():
            conn.close()
        self._watchers.clear()
