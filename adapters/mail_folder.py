"""Outbound mail behind the MailSender port, as a drop folder of .eml files.

FolderMailer suits hosts where a local MTA or a human picks messages up from disk (and the
embedded defaults, where outbound mail is only written down); each file is named after the
message so a retried send replaces its own file instead of adding a copy.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from gateway.ports import PermanentError, TransientError

__all__ = ["FolderMailer"]

FOLDER_MODE = 0o750
FILE_MODE = 0o640
# errno values an operator has to fix (permissions, read-only mount, a file where the folder
# should be); anything else (disk full, I/O error) may clear up by itself.
_PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST})


class FolderMailer:
    """Writes each message atomically as `<hash>.eml` into one folder.

    The name hashes the Message-ID together with the recipient, so re-sending the same message
    to the same person overwrites one file, while the same message to two recipients stays two
    files (the .eml carries no envelope, the name is all that tells the copies apart). Without
    a Message-ID the content is hashed instead. Readers should only pick up `*.eml`: partial
    writes live in hidden `.tmp` files until they are renamed into place.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self._folder = Path(folder)
        self._folder_sync = _GroupSync()

    def __repr__(self) -> str:
        return f"FolderMailer(folder={str(self._folder)!r})"

    async def send(self, message: bytes, mail_from: str, rcpt_to: str) -> Mapping[str, Any]:
        """Write (or overwrite) the file for this message and recipient."""
        try:
            path = await asyncio.to_thread(self._write, message, rcpt_to)
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            reason = f"cannot write into {self._folder}: {code}"
            if exc.errno in _PERMANENT_ERRNOS:
                raise PermanentError(reason) from exc
            raise TransientError(reason) from exc
        return {"path": str(path)}

    def _write(self, message: bytes, rcpt_to: str) -> Path:
        path = self._folder / _file_name(message, rcpt_to)
        _write_atomically(self._folder, path, message)
        # The rename is durable only once the directory entry itself reaches the disk. Sends
        # run concurrently: one folder fsync started after a rename covers it, so renames
        # that happen while an fsync is under way share the next one.
        self._folder_sync.sync(lambda: _fsync_folder(self._folder))
        return path


def _file_name(message: bytes, rcpt_to: str) -> str:
    message_id = _message_id(message)
    if message_id is None:
        key = b"content\0" + message
    else:
        key = b"message-id\0" + message_id.encode("utf-8", "surrogateescape")
    key += b"\0" + rcpt_to.encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest() + ".eml"


def _message_id(message: bytes) -> str | None:
    # compat32 returns the raw header text; the stricter policies may rewrite a malformed id.
    headers = BytesHeaderParser(policy=compat32).parsebytes(message)
    value = headers.get("Message-ID")
    if value is None:
        return None
    unfolded = " ".join(str(value).split())
    return unfolded or None


def _write_atomically(folder: Path, path: Path, data: bytes) -> None:
    """Blocking: temp file in the same folder, fsync, rename over the target (the caller
    then fsyncs the folder)."""
    _ensure_folder(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp creates 0o600; set the mode regardless of umask
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _GroupSync:
    """Group fsync across threads: a caller returns once a sync that *started* after it
    called has finished, so one sync serves every caller that was waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the counters
        self._syncing = threading.Lock()  # one sync at a time
        self._requested = 0
        self._done = 0

    def sync(self, do_sync: Callable[[], None]) -> None:
        with self._lock:
            self._requested += 1
            mine = self._requested
        with self._syncing:
            if self._done >= mine:
                return  # a sync that started after our request has completed
            with self._lock:
                covers = self._requested
            do_sync()
            self._done = covers


def _ensure_folder(folder: Path) -> None:
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=FOLDER_MODE)
    except FileExistsError:
        return  # created concurrently; leave its mode alone
    os.chmod(folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask
