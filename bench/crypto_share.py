"""What sharing the Matrix crypto store costs each time the holder saves it.

With several nodes, the node holding the `matrix` lease saves the crypto store's files that
changed after every sync and every post in an encrypted room (adapters.matrix_crypto_share),
in the event loop. First a stamp (gateway.store.folder.FolderStamp: the database's
data_version, the other files' size and time) says whether anything changed since the last
save; most posts change nothing, and cost only that. When something did, a consistent copy
of nio's SQLite store through SQLite's backup API and a digest of each file tell what to
upload. This script times both on stores of 0.1, 1 and 10 MB (about 160, 1,600 and 16,000
room keys of ~600 bytes), against a plain read of the same file's bytes in the same run
(the least any copy costs), p50 of `--rounds` each. The upload itself is one INSERT ... ON
CONFLICT of the changed files, one round trip.

    .venv/bin/python bench/crypto_share.py
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from gateway.store.folder import FolderStamp, digest, read_folder  # noqa: E402


def _p50_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    path = folder / "@gw:m.example_DEVICE.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE megolm_inbound_sessions (id INTEGER PRIMARY KEY, pickle BLOB)")
    stamp = FolderStamp(folder)
    print(
        "| store | nothing changed: the stamp | plain read of the file | changed: copy + digests |"
    )
    print("|---:|---:|---:|---:|")
    for mb in (0.1, 1.0, 10.0):
        conn.execute("DELETE FROM megolm_inbound_sessions")
        rows = int(mb * 1024 * 1024 / 600)
        conn.executemany(
            "INSERT INTO megolm_inbound_sessions (pickle) VALUES (?)",
            [(os.urandom(600),) for _ in range(rows)],
        )
        conn.commit()
        conn.execute("VACUUM")
        plain = _p50_ms(path.read_bytes, args.rounds)
        shared = _p50_ms(
            lambda: [digest(data) for data in read_folder(folder).values()], args.rounds
        )
        unchanged = _p50_ms(stamp.now, args.rounds)
        size = path.stat().st_size / 1024 / 1024
        print(f"| {size:.1f} MB | {unchanged:.3f} ms | {plain:.2f} ms | {shared:.2f} ms |")
    stamp.close()
    conn.close()


if __name__ == "__main__":
    main()
