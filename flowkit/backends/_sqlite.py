"""SQLite files shared by several processes: the connection ``SQLiteStore`` and
``SQLiteQueueTransport`` open (WAL mode, a busy timeout), possibly on one file."""

from __future__ import annotations

import sqlite3
import time

from .._durations import Backoff

_BUSY_TIMEOUT = 30.0  # seconds, as the connections' busy timeout
_WAL_BACKOFF = Backoff(initial=0.005, max=0.25)  # between tries to switch to WAL mode


def connect(path: str) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, with a 30 s busy timeout, in autocommit mode
    (``BEGIN`` is explicit) and usable from any thread; closed again if setting it up fails.
    """
    conn = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    ready = False
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        enable_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        ready = True
    finally:
        if not ready:
            conn.close()
    return conn


def enable_wal(conn: sqlite3.Connection) -> None:
    """Put ``conn``'s database in WAL mode, waiting for other processes doing the same.

    Switching the journal mode needs an exclusive lock, and SQLite answers
    "database is locked" at once, without its busy handler, when two new
    connections try it together (each holds the shared lock the other needs).
    So the switch is retried, briefly and bounded, as the busy handler would.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT
    for pause in _WAL_BACKOFF.delays():
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # connections are opened in worker threads, never on the event loop
