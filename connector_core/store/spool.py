"""The spool: webhooks an ingest process took, in a SQLite file of their own until a worker
moves them into the store's inbox.

An ingest process beside a worker process (``connector serve --role ingest`` and ``--role
worker``) would otherwise share the store file's one write lock with the worker, whose
transactions (a call's new state, its hook calls, their results) are long and many; each
webhook's ``{"success": true}`` waited for them, longest when the worker was slowed by its own
load. With the spool, an ingest process's transactions wait only for each other and for the
mover's short delete. One process (``--role all``) appends to the inbox directly: its webhooks
and its worker's writes share one group commit, and nothing waits for another process.

The spool file sits beside the store (``connector.db`` → ``connector.spool.db``) and holds one
table, ``inbox``, with the columns ingest writes, and the spool's random identity. The worker
moves what it finds (``read``, ``move``, ``delete_moved``) at the start of each drain:

1. the rows past the watermark kept in the store's ``spool_moved`` table for this spool's
   identity are read (readers wait for no writer in WAL mode);
2. one transaction of the store inserts them into the inbox and advances the watermark, on
   the condition that it still stands where it was read: a row is moved once, whatever
   stops when, and two processes moving at once cannot both succeed;
3. the moved rows are deleted from the spool.

A spool file deleted and made again has a new identity, so its ids (which ``AUTOINCREMENT``
never reuses within one file) start from a watermark of 0; the worker reads the new file once
the one it had open has nothing left to move (``Mover``). A spool whose ids fell behind its
watermark (an older copy put back, its ``-wal`` lost) would have its new rows taken for moved
ones: it gets a new identity and is moved again whole (``SpoolReset``), a row perhaps twice,
none lost.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector_core.store.sqlite_commit import (
    Failed,
    GroupCommit,
    InboxAppend,
    begin_immediate,
    connect,
    insert_inbox_rows,
)

# Rows moved by one transaction at most: the worker's drain takes 200 items a page.
MOVE_BATCH = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    call_id TEXT,
    received_at REAL NOT NULL,
    params TEXT NOT NULL,
    event TEXT
);
CREATE TABLE IF NOT EXISTS identity (id INTEGER PRIMARY KEY CHECK (id = 1), value TEXT NOT NULL)
"""


class SpoolError(Exception):
    """Spooled webhooks could not be moved this time; they stay in the spool."""


class MovedElsewhere(SpoolError):
    """Another process moved the rows read meanwhile: nothing is wrong."""


class SpoolReset(SpoolError):
    """The spool's ids fell behind its watermark; it was given a new identity."""


def path_beside(store: Path) -> Path:
    """The spool file of the store file ``store``: ``connector.db`` → ``connector.spool.db``."""
    return store.with_name(f"{store.stem}.spool{store.suffix}")


class Spool(GroupCommit):
    """The spool file as an ingest process writes it: appends, group-committed."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.writes_only = True
        self._file: tuple[int, int] | None = None  # (device, inode) of the file written

    async def open(self) -> None:
        def make() -> sqlite3.Connection:
            db = connect(self.path)
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO identity (id, value) VALUES (1, ?)", (uuid.uuid4().hex,)
            )
            db.execute("PRAGMA busy_timeout=0")  # writes_only: the lock is waited for in BEGIN
            return db

        await self._open("spool", make)
        self._file = file_of(self.path)

    async def close(self) -> None:
        await self._close()

    async def writable(self) -> bool:
        """Whether a real write to the spool succeeds (``SQLiteStore.writable``), to the file
        the worker reads: one deleted or replaced meanwhile is not."""
        if file_of(self.path) != self._file:
            return False

        def probe(db: sqlite3.Connection) -> bool:
            return db.execute("UPDATE identity SET value = value WHERE id = 1").rowcount == 1

        return await self._write(probe)

    async def append(self, row: tuple[Any, ...]) -> int:
        """Store one webhook's inbox row; its spool id once it is durable."""
        result: int = await self._write(InboxAppend(row))
        return result


@dataclass(frozen=True)
class Found:
    """What ``read`` found in a spool: the rows past the watermark, oldest first."""

    identity: str
    after: int  # the watermark the rows were read past
    rows: list[tuple[Any, ...]]  # (id, account, call_id, received_at, params, event)

    @property
    def through(self) -> int:
        """The watermark once these rows are moved."""
        return int(self.rows[-1][0]) if self.rows else self.after


def read(spool: sqlite3.Connection, db: sqlite3.Connection) -> Found | None:
    """The spooled rows not moved yet (``spool``: a reader of the spool file); ``db`` is the
    store's connection. None when there is nothing to move or delete.

    :raises SpoolReset: the spool's ids fell behind its watermark; it has a new identity now.
    """
    mark = _watermark(spool, db)
    if mark is None:
        return None
    identity, after = mark
    (made,) = spool.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'inbox'"
    ).fetchone()
    if made < after:
        # Ids this file has given out end below what was moved from it (an older copy put
        # back, its WAL lost): its new rows would pass for moved ones. Moved again from 0 under
        # a new identity, a row moved before comes twice, as a webhook Sipuni repeats does;
        # none is lost.
        spool.execute("UPDATE identity SET value = ? WHERE id = 1", (uuid.uuid4().hex,))
        raise SpoolReset(
            f"the spool's ids end at {made}, below the {after} already moved from it (a copy"
            " put back, or its -wal file lost): all its rows are moved again, once more for"
            " those moved before"
        )
    rows = spool.execute(
        "SELECT id, account, call_id, received_at, params, event FROM inbox"
        " WHERE id > ? ORDER BY id LIMIT ?",
        (after, MOVE_BATCH),
    ).fetchall()
    (oldest,) = spool.execute("SELECT min(id) FROM inbox").fetchone()
    if not rows and (oldest is None or oldest > after):
        return None
    return Found(identity, after, rows)


def move(db: sqlite3.Connection, found: Found) -> int:
    """Inside the store's write transaction: ``found``'s rows into the inbox, and the
    watermark past them; returns how many were moved.

    :raises MovedElsewhere: the watermark moved since ``found`` was read.
    :raises SpoolError: a row could not be inserted; the transaction's other writes stand.
    """
    cur = db.execute(
        "INSERT INTO spool_moved (identity, through) VALUES (?, ?)"
        " ON CONFLICT (identity) DO UPDATE SET through = excluded.through"
        " WHERE spool_moved.through = ?",
        (found.identity, found.through, found.after),
    )
    if cur.rowcount != 1:
        raise MovedElsewhere("another process moved these webhooks meanwhile")
    for result in insert_inbox_rows(db, [row[1:] for row in found.rows]):
        if isinstance(result, Failed):
            raise SpoolError(f"a spooled webhook cannot be put in the inbox: {result.error}")
    return len(found.rows)


def pending(spool: sqlite3.Connection, db: sqlite3.Connection) -> int:
    """How many spooled webhooks wait to be moved into the inbox."""
    mark = _watermark(spool, db)
    if mark is None:
        return 0
    (count,) = spool.execute("SELECT count(*) FROM inbox WHERE id > ?", (mark[1],)).fetchone()
    return int(count)


def _watermark(spool: sqlite3.Connection, db: sqlite3.Connection) -> tuple[str, int] | None:
    """The spool's identity and the last of its ids moved into the inbox (0: none yet); None
    while the ingest process is making the file this very moment."""
    row = spool.execute("SELECT value FROM identity WHERE id = 1").fetchone()
    if row is None:
        return None
    identity = str(row[0])
    mark = db.execute("SELECT through FROM spool_moved WHERE identity = ?", (identity,)).fetchone()
    return identity, int(mark[0]) if mark else 0


class Mover:
    """A worker's side of the spool, used on the store's thread: its reader of the file, which
    follows the file when it is replaced, and the delete of what was moved.

    A broken spool file (not a database, damaged, unreadable) raises sqlite's errors to the
    caller, which logs them, calls ``reopen``, and processes the store's own inbox all the same.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file read
        self._closed = False

    def connection(self) -> sqlite3.Connection | None:
        """The reader of the spool, or None while there is no spool (or none ready yet)."""
        if self._db is None and not self._closed:
            self._open()
        return self._db

    def read(self, db: sqlite3.Connection) -> Found | None:
        """``read`` from the spool; once a file that was replaced (deleted, made again by an
        ingest process) has nothing more to move, from the file now at the path."""
        spool = self.connection()
        found = read(spool, db) if spool is not None else None
        if found is None and spool is not None and self._replaced():
            self.reopen()
            spool = self.connection()
            found = read(spool, db) if spool is not None else None
        return found

    def delete(self, found: Found) -> None:
        """Delete the rows up to ``found``'s watermark: waiting for the spool's lock in short
        pauses, as a writer does, since the ingest processes take it often."""
        spool = self.connection()
        if spool is None:
            return
        begin_immediate(spool)
        try:
            spool.execute("DELETE FROM inbox WHERE id <= ?", (found.through,))
            spool.execute("COMMIT")
        finally:
            if spool.in_transaction:
                spool.execute("ROLLBACK")

    def pending(self, db: sqlite3.Connection) -> int:
        spool = self.connection()
        return pending(spool, db) if spool is not None else 0

    def close(self) -> None:
        """Close the reader; ``connection`` returns None from now on."""
        self._closed = True
        if self._db is not None:
            self._db.close()
            self._db, self._file = None, None

    def reopen(self) -> None:
        """Let go of the file read (it could not be read, or another took its place): the path
        is opened afresh next time."""
        self.close()
        self._closed = False

    def _open(self) -> None:
        found = file_of(self.path)
        if found is None:
            return
        db = connect(self.path)
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'identity'").fetchone():
                self._db, self._file = db, found
                return
        except BaseException:
            db.close()
            raise
        db.close()  # made, its tables not yet: an ingest process is making it

    def _replaced(self) -> bool:
        return file_of(self.path) != self._file


def file_of(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` (device, inode), or None when none is."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


class ErrorLog:
    """One kind of failure in the log: each new one at once, the same one again at most once
    a minute (the worker tries again at every drain), and when it stops."""

    EVERY_SECONDS = 60.0

    def __init__(self, log: logging.Logger, level: int, message: str, recovered: str) -> None:
        self.log, self.level, self.message, self.recovered = log, level, message, recovered
        self._last: tuple[str, float] | None = None

    def error(self, exc: BaseException) -> None:
        text, now = f"{type(exc).__name__}: {exc}", time.monotonic()
        if self._last is None or self._last[0] != text or now - self._last[1] >= self.EVERY_SECONDS:
            self.log.log(self.level, self.message, text)
            self._last = (text, now)

    def ok(self) -> None:
        if self._last is not None:
            self.log.info(self.recovered)
            self._last = None
