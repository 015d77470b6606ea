"""Transactions in few round trips: BEGIN, the statements and COMMIT sent together.

In pipeline mode a statement is sent without waiting for its answer; only a read (fetching
rows) waits, for everything sent before it. `transaction` opens one explicitly (BEGIN),
and on leaving sends COMMIT and waits once, for the COMMIT too: when it returns, the
transaction is committed (with `synchronous_commit` on, on disk), so callers still answer
only after the commit. Results of statements not read inside the block can be read from
their cursors afterwards. On any error nothing is kept: a statement the server refused
makes it skip the rest up to the COMMIT, the transaction is rolled back, the error raised.

psycopg's own `Connection.transaction()` waits for an answer when it is entered and
twice when it is left (its nested pipelines sync), three round trips that add up on
the short transactions of the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import pq

from gateway.store.postgres.schema import Conn


@contextlib.contextmanager
def transaction(conn: Conn) -> Iterator[None]:
    """One transaction in pipeline mode, committed in the same round trip as its last
    statements (see the module docstring). The connection must be in autocommit mode."""
    with conn.pipeline() as pipeline:
        conn.execute("BEGIN")
        try:
            yield
            conn.execute("COMMIT")
            pipeline.sync()
        except BaseException:
            _roll_back(conn, pipeline)
            raise


def _roll_back(conn: Conn, pipeline: psycopg.Pipeline) -> None:
    """Undo what was sent (the error being raised stays the one the caller sees)."""
    if conn.broken or conn.pgconn.status != pq.ConnStatus.OK:
        return  # the server ends the transaction with the connection
    with contextlib.suppress(psycopg.Error):
        pipeline.sync()  # collect what was sent; a pending error is the one already raised
    with contextlib.suppress(psycopg.Error):
        conn.execute("ROLLBACK")
        pipeline.sync()
