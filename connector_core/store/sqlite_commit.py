"""Group commit on one SQLite connection: writes queued from the event loop, written by one
transaction at a time on a thread of their own.

Each write method queues its statements and waits; the queue is written by one transaction
at a time, with everything that queued up while the previous one was being written, so one
fsync serves every write of a batch. A write that fails is undone alone and raises for its
caller only; the others of its batch are committed (``_commit_batch``). No write returns
before the COMMIT that holds its statements has returned: with synchronous=FULL, before it is
durable. A lone write is flushed at once: no timer, no added delay.

A batch runs as few statements as it can, since each SQLite call from the store's thread
gives up the GIL and must get it back from the event loop, which under load keeps it up to
the interpreter's switch interval (5 ms), all the while holding the file's write lock: the
webhooks of a batch are inserted by one statement (``insert_inbox_rows``), not one each, and
the writes run without a savepoint each unless one of them fails.

``GroupCommit`` is the store's (``SQLiteStore``, the file ``connector.db``) and the spool's
(``Spool``, the webhooks an ingest process takes) alike.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from connector_core.store.base import StoreUnavailable
from connector_core.store.thread import StoreThread

T = TypeVar("T")

# Writes in one group commit at most: bounds how long one transaction holds the writer
# thread (and so the reads queued behind it) under a flood of webhooks.
MAX_WRITE_BATCH = 512

# How long a statement waits for a lock another process holds (an ingest process and a worker
# process share the file) before it fails.
BUSY_TIMEOUT_MS = 5000
# Waiting for the write lock, the pauses between tries: short ones first, since a transaction
# holds the lock for about a millisecond (SQLite's own wait sleeps 1, 2, 5, 10 ms… in turn,
# which made a webhook wait several milliseconds for a lock let go long before).
LOCK_PAUSES = (0.0001, 0.0002, 0.0005, 0.001)


# What a SQLite store needs of its folder: SQLite writes the -wal and -shm files beside the file.
WRITABLE_FOLDER = (
    "the folder must exist (or be creatable) and be writable by the user the service runs as,"
    " for the database and the -wal and -shm files SQLite keeps beside it"
)
_CANNOT_OPEN = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM)


def cannot_create(path: Path) -> str | None:
    """Why the service could not create a SQLite store at ``path`` (which does not exist), or
    ``None``: the nearest folder that exists must let this user create what is missing."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{path}: {folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{path}: {folder} is not writable by this user; {WRITABLE_FOLDER}"
    return None


def _outside_transaction(fn: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> T:
    """``fn(db)`` on the store's thread, where no write transaction is open between calls:
    one still open was left by a ROLLBACK that failed (an I/O error at the time), and a read
    in it would see the failed batch's rows. It is rolled back first."""
    if db.in_transaction:
        db.execute("ROLLBACK")
    return fn(db)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the database file at ``path`` (made, with its folder, if missing) in
    WAL mode with synchronous=FULL, as every connection of the service's writers is.

    A file or folder this user cannot create or write is ``StoreUnavailable`` naming them."""
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.OperationalError) as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if isinstance(exc, sqlite3.OperationalError) and code not in _CANNOT_OPEN:
            raise  # busy, say: not about the file's place
        raise StoreUnavailable(f"{path}: {exc}; {WRITABLE_FOLDER}") from exc
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Statement journals (every page a batch changes under its savepoint) and sort files in
    # memory: on disk they were two thirds of the bytes written per event.
    db.execute("PRAGMA temp_store=MEMORY")
    # Deleted rows (pruned numbers) are overwritten, not left readable in free pages.
    db.execute("PRAGMA secure_delete=ON")
    return db


class GroupCommit:
    """One connection's thread, and the writes waiting for its next transaction.

    ``_open(make)`` starts the thread and makes the connection on it; ``_run`` reads,
    ``_write`` writes; ``_close`` lets the writes already handed over finish, then closes.
    """

    def __init__(self) -> None:
        self._thread: StoreThread | None = None
        self._db: sqlite3.Connection | None = None
        # Writes waiting for the next group commit; set while a transaction is being written.
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._committing: asyncio.Future[None] | None = None
        # Told each write transaction's seconds, on the store's thread (the app: a metric).
        self.on_commit: Callable[[float], None] | None = None
        # The connection is only written through ``_write`` (see ``begin_immediate``).
        self.writes_only = False

    async def _open(self, name: str, make: Callable[[], sqlite3.Connection]) -> None:
        self._thread = StoreThread(name)
        self._db = await self._thread.call(make)

    async def _close(self) -> None:
        while self._committing is not None:  # let the writes already handed over finish
            await asyncio.shield(self._committing)
        if self._db is not None and self._thread is not None:
            # Gone before it is closed: a call made from now on is refused as the store being
            # unavailable, not run on a closed connection (sqlite's "closed database").
            db, self._db = self._db, None
            await self._thread.call(db.close)
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None or self._db is None:
            raise StoreUnavailable("the store is not open")
        return await self._thread.call(functools.partial(_outside_transaction, fn, self._db))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next group-committed transaction; return once that is durable.

        ``fn`` must not begin, commit or roll back: its statements run inside the batch's
        transaction. It may run twice (see ``_commit_batch``), so it must depend on the
        database only: serialise before, not inside it.
        """
        if self._thread is None or self._db is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._writes.append((fn, waiter))
        if self._committing is None:
            # Straight to the writer thread: no task to schedule first, so a lone write
            # waits for nothing but its own transaction.
            self._commit_next(loop)
        return await waiter

    def _commit_next(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send the waiting writes (up to a batch) to the writer thread as one transaction."""
        batch = self._writes[:MAX_WRITE_BATCH]
        del self._writes[:MAX_WRITE_BATCH]
        assert self._thread is not None and self._db is not None
        commit = functools.partial(self._timed_commit, self._db, [fn for fn, _ in batch])
        then = functools.partial(self._committed, loop, batch)
        try:
            self._thread.submit(commit, then)
        except RuntimeError as exc:  # the thread was shut down
            then(None, exc)
            return
        self._committing = loop.create_future()

    def _timed_commit(
        self, db: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[Any]:
        """``_commit_batch``, on the store's thread, its time told to ``on_commit``."""
        started = time.perf_counter()
        try:
            return _commit_batch(db, fns, writes_only=self.writes_only)
        finally:
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started)

    def _committed(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]],
        results: list[Any] | None,
        error: BaseException | None,
    ) -> None:
        """Back on the loop: give each write its result, then send the next batch, if any."""
        if error is not None:  # handed to every caller of the batch
            results = [Failed(error)] * len(batch)
        assert results is not None
        for (_, waiter), result in zip(batch, results, strict=True):
            if waiter.done():  # the caller went away; the write stands all the same
                continue
            if isinstance(result, Failed):
                waiter.set_exception(result.error)
            else:
                waiter.set_result(result)
        committing, self._committing = self._committing, None
        if committing is not None and not committing.done():
            committing.set_result(None)
        if self._writes:
            self._commit_next(loop)


class Failed:
    """A write's exception, carried back from the writer thread as its result."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_INBOX_COLUMNS = ("account", "call_id", "received_at", "params", "event")
# Rows per INSERT statement: 5 parameters each, under the 999 of SQLite builds before 3.32.
ROWS_PER_INSERT = 100


class InboxAppend:
    """The write of one webhook: a row of ``inbox``. ``_commit_batch`` inserts the rows of
    every append in its batch together; called alone, it inserts its own."""

    __slots__ = ("row",)

    def __init__(self, row: tuple[Any, ...]) -> None:
        self.row = row

    def __call__(self, db: sqlite3.Connection) -> int:
        (result,) = insert_inbox_rows(db, [self.row])
        if isinstance(result, Failed):
            raise result.error
        return result


@functools.cache
def _inbox_insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO inbox ({', '.join(_INBOX_COLUMNS)}) VALUES {values}"


def insert_inbox_rows(
    db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]
) -> list[int | Failed]:
    """Insert ``rows`` into ``inbox``, one statement per ``ROWS_PER_INSERT``; each one's id,
    or ``Failed`` for a row that could not be stored.

    Within the write transaction nobody else inserts, and a new row's id is one more than
    the largest (``id`` is the rowid; with AUTOINCREMENT, the spool's, one more than the
    largest ever given, which within the transaction is the same): the rows of one statement get
    consecutive ids, the last of them ``lastrowid``. A statement that fails is undone by
    SQLite alone, the transaction going on; its rows are then inserted one by one, so the
    row at fault fails alone. Raises when SQLite gave up the whole transaction.
    """
    results: list[int | Failed] = []
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        try:
            cur = db.execute(_inbox_insert_sql(len(chunk)), [v for row in chunk for v in row])
        except Exception as exc:
            if not db.in_transaction:
                raise
            if len(chunk) == 1:
                results.append(Failed(exc))
            else:  # each row again in a statement of its own: the one at fault fails alone
                for row in chunk:
                    results.extend(insert_inbox_rows(db, [row]))
            continue
        last = int(cur.lastrowid or 0)
        results.extend(range(last - len(chunk) + 1, last + 1))
    return results


def begin_immediate(db: sqlite3.Connection, *, writes_only: bool = False) -> None:
    """Begin a write transaction, waiting up to ``BUSY_TIMEOUT_MS`` for the write lock in short
    pauses (``LOCK_PAUSES``); a lock held longer fails as SQLite's own wait does.

    SQLite's own wait is switched off meanwhile, and on again after, for the reads of the
    connection; a connection that only writes (``writes_only``: the spool's) has it off for
    good, two statements fewer per transaction.

    A transaction still open here is one whose ROLLBACK failed (an I/O error at the time): it
    is rolled back now, or every write after it would fail with "cannot start a transaction
    within a transaction" until a restart.
    """
    if db.in_transaction:
        db.execute("ROLLBACK")
    if not writes_only:
        db.execute("PRAGMA busy_timeout=0")
    try:
        _waiting_for_lock(lambda: db.execute("BEGIN IMMEDIATE"))
    finally:
        if not writes_only:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _waiting_for_lock(statement: Callable[[], T]) -> T:
    """``statement()``, tried again in short pauses (``LOCK_PAUSES``) while another connection
    holds the write lock, up to ``BUSY_TIMEOUT_MS``; SQLite's own wait must be off."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    for attempt in itertools.count():
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            # Any kind of busy (the extended codes too: another process recovering the
            # WAL after a crash is SQLITE_BUSY_RECOVERY), as SQLite's own wait does.
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(LOCK_PAUSES[min(attempt, len(LOCK_PAUSES) - 1)])
    raise AssertionError("unreachable")  # itertools.count() never ends


def _append_alone(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[int | Failed]:
    """Insert ``rows`` into ``inbox`` by one statement outside any transaction: SQLite makes
    it a transaction of its own, begun, written and committed (synced) inside that one call.

    For a connection that only appends (the spool's): one statement is one wait for the GIL
    after SQLite gives it up, where ``BEGIN``, ``INSERT``, ``COMMIT`` were three, each up to the
    interpreter's switch interval while the event loop runs. A statement that fails is undone
    whole by SQLite; its rows are then inserted one by one, so the row at fault fails alone.
    """
    if db.in_transaction:  # left by a ROLLBACK that failed (see ``begin_immediate``)
        db.execute("ROLLBACK")
    values = [v for row in rows for v in row]
    try:
        cur = _waiting_for_lock(lambda: db.execute(_inbox_insert_sql(len(rows)), values))
    except Exception as exc:
        # The file's fault (locked too long, full, an I/O error) is every row's: not tried
        # again row by row, each waiting as long.
        if len(rows) == 1 or isinstance(exc, sqlite3.OperationalError):
            return [Failed(exc)] * len(rows)
        return [result for row in rows for result in _append_alone(db, [row])]
    last = int(cur.lastrowid or 0)
    return list(range(last - len(rows) + 1, last + 1))


def _commit_batch(
    db: sqlite3.Connection,
    fns: list[Callable[[sqlite3.Connection], Any]],
    *,
    writes_only: bool = False,
) -> list[Any]:
    """Run the writes ``fns`` in one transaction, the webhooks among them by one statement
    (``insert_inbox_rows``); one COMMIT.

    Returns each write's result, or ``Failed`` for a write that raised (its statements are
    undone, the others stand) and for every write of a batch whose COMMIT failed.

    The writes run first without a savepoint each (two statements fewer per write, each a
    wait for the GIL while the batch holds the write lock), under one savepoint for them
    all. When one raises, they are rolled back to it and run again, in the same transaction
    (the lock is not let go), with a savepoint around each, so the one at fault fails alone.
    A write depends on the database only, so running it again after the rollback is running
    it once. A batch of webhooks alone needs no savepoint: a row that fails is undone by its
    statement alone (``insert_inbox_rows``).

    ``writes_only``: see ``begin_immediate``.
    """
    appends = [fn.row for fn in fns if isinstance(fn, InboxAppend)]
    if writes_only and len(appends) == len(fns) <= ROWS_PER_INSERT:
        return list(_append_alone(db, appends))
    try:
        begin_immediate(db, writes_only=writes_only)
        # Webhooks alone never raise _WriteFailed (a failing row is undone by its statement).
        if len(appends) < len(fns):
            db.execute("SAVEPOINT batch")
        try:
            results = _run_writes(db, fns, savepoints=False)
        except _WriteFailed:
            db.execute("ROLLBACK TO batch")
            results = _run_writes(db, fns, savepoints=True)
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if not isinstance(exc, Exception):
            raise
        return [Failed(exc)] * len(fns)
    return results


class _WriteFailed(Exception):
    """A write raised in a batch run without savepoints; the transaction is still open."""


def _run_writes(
    db: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]], *, savepoints: bool
) -> list[Any]:
    """Run ``fns`` inside the open transaction; without ``savepoints``, raise ``_WriteFailed``
    at the first that fails."""
    results: list[Any] = [None] * len(fns)
    appends = [(i, fn.row) for i, fn in enumerate(fns) if isinstance(fn, InboxAppend)]
    ids = insert_inbox_rows(db, [row for _, row in appends])
    for (i, _), item_id in zip(appends, ids, strict=True):
        results[i] = item_id
    for i, fn in enumerate(fns):
        if isinstance(fn, InboxAppend):
            continue
        if savepoints:
            db.execute("SAVEPOINT write")
        try:
            results[i] = fn(db)
        except Exception as exc:
            if not db.in_transaction:
                # SQLite gave up the whole transaction (an I/O error, a full disk):
                # nothing of this batch is stored.
                raise
            if not savepoints:
                raise _WriteFailed from exc
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
            results[i] = Failed(exc)
        else:
            if savepoints:
                db.execute("RELEASE write")
    return results
