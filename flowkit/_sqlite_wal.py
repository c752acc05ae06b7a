"""Opening a SQLite file in WAL mode from several processes at once."""

from __future__ import annotations

import sqlite3
import time

_WAL_TIMEOUT = 30.0  # seconds, as the connections' busy timeout


def enable_wal(conn: sqlite3.Connection) -> None:
    """Put ``conn``'s database in WAL mode, waiting for other processes doing the same.

    Switching the journal mode needs an exclusive lock, and SQLite answers
    "database is locked" at once, without its busy handler, when two new
    connections try it together (each holds the shared lock the other needs).
    So the switch is retried, briefly and bounded, as the busy handler would.
    """
    deadline = time.monotonic() + _WAL_TIMEOUT
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # connections are opened in worker threads, never on the event loop
        pause = min(pause * 2, 0.25)
