"""The embedded store: one SQLite file in WAL mode with synchronous=FULL.

Every method runs on one dedicated thread that owns the only connection, so SQLite's
blocking I/O never stalls the event loop and no two writes interleave.

Writes are group-committed: each write method queues its statements and waits; the queue is
written by one transaction at a time, with everything that queued up while the previous one
was being written, so one fsync serves every write of a batch (webhooks, worker commits,
effect keys, dispatch results). A write that fails is undone alone and raises for its
caller only; the others of its batch are committed (``_commit_batch``). No write method
returns before the COMMIT that holds its statements has returned: with synchronous=FULL,
before it is durable. A lone write is flushed at once: no timer, no added delay.

A batch runs as few statements as it can, since each SQLite call from the store's thread
gives up the GIL and must get it back from the event loop, which under load keeps it up to
the interpreter's switch interval (5 ms), all the while holding the file's write lock: the
webhooks of a batch are inserted by one statement (``_insert_inbox_rows``), not one each, and
the writes run without a savepoint each unless one of them fails.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from connector_core import callrecords
from connector_core.callrecords import CallRecord, NewCallRecord
from connector_core.callstate import CallState, LifecycleEvent
from connector_core.clock import Clock, SystemClock
from connector_core.events import SipuniEvent
from connector_core.missed import NumberCall
from connector_core.pacing import COMPLETING_KEY
from connector_core.store.base import (
    DISPATCH_CHANNEL,
    INBOX_CHANNEL,
    MAX_REJECTED,
    PROBE_TIMEOUT,
    ROWS_OF_STATUS,
    BoundEffects,
    CallQuery,
    CallRow,
    DeliveryStatus,
    Dispatch,
    DueHead,
    GroupWork,
    InboxItem,
    NewDispatch,
    QueueDepth,
    RecentUse,
    Rejected,
    SeenScheme,
    StoreInfo,
    StoreUnavailable,
    call_id_of,
    extensions_column,
    stored_event,
)
from connector_core.store.local import LocalCoordination
from connector_core.store.migrations import LATEST, migrate, version_of
from connector_core.store.number_calls_sql import dispatch_rows, number_call_row
from connector_core.store.parsed import ParsedStates
from connector_core.store.pruning import PruneRule, count_sql, delete_batch_sql
from connector_core.store.sqlite_number_calls import SQLiteNumberCalls, note_number_call
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


class SQLiteStore(SQLiteNumberCalls, LocalCoordination):
    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        # One worker process per file (`connector serve`): coordination lives in memory.
        super().__init__(clock or SystemClock())
        self.path = Path(path)
        self._thread: StoreThread | None = None
        self._db: sqlite3.Connection | None = None
        # Writes waiting for the next group commit; set while a transaction is being written.
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._committing: asyncio.Future[None] | None = None
        self.parsed = ParsedStates()
        # Told each write transaction's seconds, on the store's thread (the app: a metric).
        self.on_commit: Callable[[float], None] | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None or self._db is None:
            raise StoreUnavailable("the store is not open")
        return await self._thread.call(functools.partial(fn, self._db))

    async def open(self) -> None:
        self._thread = StoreThread("sqlite")

        def connect() -> sqlite3.Connection:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Statement journals (every page a batch changes under its savepoint) and sort
            # files in memory: on disk they were two thirds of the bytes written per event.
            db.execute("PRAGMA temp_store=MEMORY")
            # Deleted rows (pruned numbers) are overwritten, not left readable in free pages.
            db.execute("PRAGMA secure_delete=ON")
            migrate(db)
            return db

        self._db = await self._thread.call(connect)

    async def close(self) -> None:
        while self._committing is not None:  # let the writes already handed over finish
            await asyncio.shield(self._committing)
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None

    async def writable(self) -> bool:
        """Whether a real write succeeds: the probe row is updated and committed.

        It goes through the same group commit as every other write, so it fails when they
        do (a full disk, an I/O error), and it is as durable as they are. A write that does
        not come back within ``PROBE_TIMEOUT`` seconds counts as failed.
        """
        now = self.clock.now()

        def probe(db: sqlite3.Connection) -> bool:
            cur = db.execute("UPDATE probe SET written_at = ? WHERE id = 1", (now,))
            return cur.rowcount == 1

        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                return await self._write(probe)
        except (sqlite3.Error, StoreUnavailable, TimeoutError):
            return False

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
            return _commit_batch(db, fns)
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
            results = [_Failed(error)] * len(batch)
        assert results is not None
        for (_, waiter), result in zip(batch, results, strict=True):
            if waiter.done():  # the caller went away; the write stands all the same
                continue
            if isinstance(result, _Failed):
                waiter.set_exception(result.error)
            else:
                waiter.set_result(result)
        committing, self._committing = self._committing, None
        if committing is not None and not committing.done():
            committing.set_result(None)
        if self._writes:
            self._commit_next(loop)

    # -- inbox ------------------------------------------------------------------------------

    async def append_event(
        self,
        account: str,
        params: dict[str, Any],
        received_at: float,
        event: SipuniEvent | None = None,
    ) -> int:
        """Store one webhook; returns its inbox id once the transaction holding it is durable.

        Group commit (see the module doc): appends that arrive while a transaction is being
        written go together into the next one, so one fsync serves many webhooks.
        """
        row = (
            account,
            call_id_of(params),
            received_at,
            json.dumps(params, ensure_ascii=False),
            event.model_dump_json() if event is not None else None,
        )
        item_id: int = await self._write(InboxAppend(row))
        await self.publish(INBOX_CHANNEL, "")
        return item_id

    async def record_rejected(
        self, account: str | None, params: dict[str, Any], reason: str, received_at: float
    ) -> int:
        text = json.dumps(params, ensure_ascii=False)

        def insert(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO rejected (account, received_at, reason, params) VALUES (?, ?, ?, ?)",
                (account, received_at, reason, text),
            )
            row_id = int(cur.lastrowid or 0)
            if row_id % 100 == 0:
                db.execute("DELETE FROM rejected WHERE id <= ?", (row_id - MAX_REJECTED,))
            return row_id

        return await self._write(insert)

    async def rejected(self, limit: int = 100) -> list[Rejected]:
        def select(db: sqlite3.Connection) -> list[Rejected]:
            rows = db.execute(
                "SELECT id, account, received_at, reason, params FROM rejected"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [Rejected(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

        return await self._run(select)

    _INBOX_COLUMNS = "id, account, received_at, params, status, attempts, last_error, event"

    @staticmethod
    def _inbox_item(row: tuple[Any, ...]) -> InboxItem:
        return InboxItem(
            row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], stored_event(row[7])
        )

    async def pending_events(self, limit: int, after_id: int = 0) -> list[InboxItem]:
        def select(db: sqlite3.Connection) -> list[InboxItem]:
            rows = db.execute(
                f"SELECT {self._INBOX_COLUMNS} FROM inbox"
                " WHERE status = 'pending' AND id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
            return [self._inbox_item(r) for r in rows]

        return await self._run(select)

    async def fail_event(self, item_id: int, error: str, *, quarantine: bool) -> None:
        status = "quarantined" if quarantine else "pending"
        await self._write(
            lambda db: db.execute(
                "UPDATE inbox SET attempts = attempts + 1, last_error = ?, status = ?"
                " WHERE id = ? AND status = 'pending'",
                (error, status, item_id),
            )
        )

    async def quarantined_events(self, limit: int = 100) -> list[InboxItem]:
        """Inbox items set aside after failing ``MAX_ATTEMPTS`` times, oldest first."""

        def select(db: sqlite3.Connection) -> list[InboxItem]:
            rows = db.execute(
                f"SELECT {self._INBOX_COLUMNS} FROM inbox"
                " WHERE status = 'quarantined' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [self._inbox_item(r) for r in rows]

        return await self._run(select)

    async def get_event(self, item_id: int) -> InboxItem | None:
        def select(db: sqlite3.Connection) -> InboxItem | None:
            row = db.execute(
                f"SELECT {self._INBOX_COLUMNS} FROM inbox WHERE id = ?", (item_id,)
            ).fetchone()
            return self._inbox_item(row) if row else None

        return await self._run(select)

    async def requeue_event(self, item_id: int) -> bool:
        """Put a quarantined item back in the queue with fresh attempts; ``False`` if it is
        not quarantined."""

        def update(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE inbox SET status = 'pending', attempts = 0"
                " WHERE id = ? AND status = 'quarantined'",
                (item_id,),
            )
            return cur.rowcount == 1

        return await self._write(update)

    async def drop_event(self, item_id: int) -> bool:
        """Give up on a quarantined item for good (it stays visible as ``dropped``)."""

        def update(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE inbox SET status = 'dropped' WHERE id = ? AND status = 'quarantined'",
                (item_id,),
            )
            return cur.rowcount == 1

        return await self._write(update)

    async def inbox_items(
        self, *, since: float = 0.0, limit: int = 1000, after_id: int = 0
    ) -> list[InboxItem]:
        """Stored events in id order, for replay."""

        def select(db: sqlite3.Connection) -> list[InboxItem]:
            rows = db.execute(
                f"SELECT {self._INBOX_COLUMNS} FROM inbox"
                " WHERE received_at >= ? AND id > ? ORDER BY id LIMIT ?",
                (since, after_id, limit),
            ).fetchall()
            return [self._inbox_item(r) for r in rows]

        return await self._run(select)

    # -- calls ------------------------------------------------------------------------------

    async def load_call(self, account: str, call_id: str) -> CallState | None:
        def select(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT state FROM calls WHERE account = ? AND call_id = ?", (account, call_id)
            ).fetchone()
            return row[0] if row else None

        text = await self._run(select)
        return self.parsed.parse(text) if text else None

    async def load_calls(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], CallState]:
        def select(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
            # One lookup by primary key each, all in one trip to the store's thread.
            found = []
            for account, call_id in keys:
                row = db.execute(
                    "SELECT state FROM calls WHERE account = ? AND call_id = ?",
                    (account, call_id),
                ).fetchone()
                if row is not None:
                    found.append((account, call_id, row[0]))
            return found

        rows = await self._run(select) if keys else []
        return {(a, c): self.parsed.parse(text) for a, c, text in rows}

    async def commit_event(
        self,
        item_id: int | None,
        state: CallState | None,
        dispatches: list[NewDispatch],
        records: Sequence[NewCallRecord] = (),
        *,
        number_call: NumberCall | None = None,
    ) -> None:
        now = self.clock.now()
        state_row = (
            (
                state.account,
                state.call_id,
                self.parsed.dumped(state),
                int(state.finished),
                state.last_received_at,
                state.started_at if state.started_at is not None else state.last_received_at,
                state.client_number,
                extensions_column(state),
            )
            if state is not None
            else None
        )
        # Serialised before the transaction, not inside it: the batch holds the file's write
        # lock, which an ingest process beside this one waits for.
        new_dispatches = (
            dispatch_rows(state.account, [(state.call_id, d) for d in dispatches], now)
            if state is not None
            else []
        )
        record_rows = _record_rows(records)
        number_row = (
            number_call_row(state.account, state.client_number, number_call, now)
            if state is not None and number_call is not None and state.client_number
            else None
        )

        def write(db: sqlite3.Connection) -> None:
            # All or nothing: a write that fails is undone alone (see _commit_batch).
            if state_row is not None:
                db.execute(
                    "INSERT INTO calls (account, call_id, state, finished, last_received_at,"
                    " started_at, client_number, extensions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (account, call_id) DO UPDATE SET"
                    " state = excluded.state, finished = excluded.finished,"
                    " last_received_at = excluded.last_received_at,"
                    " started_at = excluded.started_at, client_number = excluded.client_number,"
                    " extensions = excluded.extensions",
                    state_row,
                )
            if item_id is not None:
                db.execute(
                    "UPDATE inbox SET status = 'done', processed_at = ? WHERE id = ?",
                    (now, item_id),
                )
            if state is not None:
                db.executemany(
                    # Only a repeated (integration, call, key) is ignored; any other
                    # constraint failure must abort the write.
                    "INSERT INTO dispatches"
                    " (account, call_id, integration, key, record, not_before, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    new_dispatches,
                )
                _insert_records(db, state.account, state.call_id, record_rows)
                if number_row is not None:
                    note_number_call(db, number_row)

        await self._write(write)
        if state is not None and dispatches:
            await self.publish(DISPATCH_CHANNEL, "")

    async def idle_open_calls(self, idle_before: float, limit: int) -> list[CallState]:
        def select(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT state FROM calls WHERE finished = 0 AND last_received_at < ?"
                " ORDER BY last_received_at LIMIT ?",
                (idle_before, limit),
            ).fetchall()
            return [r[0] for r in rows]

        return [CallState.model_validate_json(t) for t in await self._run(select)]

    # -- dispatches -------------------------------------------------------------------------

    _DISPATCH_COLUMNS = (
        "id, account, call_id, integration, key, attempts, not_before, status, last_error,"
        " created_at, record"
    )

    async def pending_dispatches(self, limit: int) -> list[Dispatch]:
        def select(db: sqlite3.Connection) -> list[Dispatch]:
            rows = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches"
                " WHERE status = 'pending' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [_dispatch(r) for r in rows]

        return await self._run(select)

    async def due_heads(self, integration: str, now: float, limit: int) -> list[DueHead]:
        """The first pending row of each of ``integration``'s calls whose turn has come.

        Only a group's first row can run (the rest wait behind it); asking per integration
        means one stalled integration's backlog cannot crowd the others out of a batch.
        The calls that hung up come first (their ``finished`` row, ``pacing.COMPLETING_KEY``,
        waits in the group: ``DueHead.completes_call``), then by age.
        """

        def select(db: sqlite3.Connection) -> list[DueHead]:
            rows = db.execute(
                "SELECT id, integration, account, call_id, key, g.completes FROM dispatches JOIN ("
                "  SELECT min(id) AS head, max(key = ?) AS completes FROM dispatches"
                "  WHERE status = 'pending' AND integration = ? GROUP BY account, call_id"
                ") AS g ON dispatches.id = g.head"
                " WHERE not_before <= ? ORDER BY g.completes DESC, dispatches.id LIMIT ?",
                (COMPLETING_KEY, integration, now, limit),
            ).fetchall()
            return [DueHead(r[0], r[1], r[2], r[3], r[4], completes_call=bool(r[5])) for r in rows]

        return await self._run(select)

    async def pending_in_group(
        self, integration: str, account: str, call_id: str
    ) -> list[Dispatch]:
        def select(db: sqlite3.Connection) -> list[Dispatch]:
            rows = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches WHERE status = 'pending'"
                " AND integration = ? AND account = ? AND call_id = ? ORDER BY id",
                (integration, account, call_id),
            ).fetchall()
            return [_dispatch(r) for r in rows]

        return await self._run(select)

    async def group_work(self, integration: str, account: str, call_id: str) -> GroupWork:
        def select(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            # One statement, one snapshot: the state holds every event that made the rows.
            # The state's subquery does not depend on the row: SQLite reads it once.
            return db.execute(
                f"SELECT {self._DISPATCH_COLUMNS}, (SELECT state FROM calls"
                " WHERE account = ?1 AND call_id = ?2) FROM dispatches"
                " WHERE status = 'pending' AND integration = ?3 AND account = ?1"
                " AND call_id = ?2 ORDER BY id",
                (account, call_id, integration),
            ).fetchall()

        found = await self._run(select)
        state = found[0][-1] if found else None
        return GroupWork(
            [_dispatch(r[:-1]) for r in found],
            self.parsed.parse(state) if state else None,
        )

    async def dispatches_for(self, account: str, call_id: str) -> list[Dispatch]:
        def select(db: sqlite3.Connection) -> list[Dispatch]:
            rows = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches"
                " WHERE account = ? AND call_id = ? ORDER BY id",
                (account, call_id),
            ).fetchall()
            return [_dispatch(r) for r in rows]

        return await self._run(select)

    async def dead_dispatches(self, limit: int = 100) -> list[Dispatch]:
        def select(db: sqlite3.Connection) -> list[Dispatch]:
            rows = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches"
                " WHERE status = 'dead' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [_dispatch(r) for r in rows]

        return await self._run(select)

    async def get_dispatch(self, dispatch_id: int) -> Dispatch | None:
        def select(db: sqlite3.Connection) -> Dispatch | None:
            row = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches WHERE id = ?", (dispatch_id,)
            ).fetchone()
            return _dispatch(row) if row else None

        return await self._run(select)

    async def requeue_dispatch(self, dispatch_id: int) -> bool:
        """Give a dead-lettered row a fresh start; ``False`` if it is not dead."""
        now = self.clock.now()

        def update(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE dispatches SET status = 'pending', attempts = 0, not_before = ?,"
                " created_at = ? WHERE id = ? AND status = 'dead'",
                (now, now, dispatch_id),
            )
            return cur.rowcount == 1

        return await self._write(update)

    async def drop_dispatch(self, dispatch_id: int) -> bool:
        """Give up on a dead-lettered row for good (it stays visible as ``dropped``)."""

        def update(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE dispatches SET status = 'dropped' WHERE id = ? AND status = 'dead'",
                (dispatch_id,),
            )
            return cur.rowcount == 1

        return await self._write(update)

    async def complete_dispatch(
        self, dispatch_id: int, records: Sequence[NewCallRecord] = ()
    ) -> None:
        now, rows = self.clock.now(), _record_rows(records)

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE dispatches SET status = 'done', done_at = ?, attempts = attempts + 1"
                " WHERE id = ?",
                (now, dispatch_id),
            )
            _insert_records_of_row(db, dispatch_id, rows)

        await self._write(update)

    async def fail_dispatch(
        self,
        dispatch_id: int,
        error: str,
        retry_at: float | None,
        records: Sequence[NewCallRecord] = (),
    ) -> None:
        args: tuple[object, ...]
        if retry_at is None:
            sql, args = (
                "UPDATE dispatches SET status = 'dead', attempts = attempts + 1, last_error = ?"
                " WHERE id = ?",
                (error, dispatch_id),
            )
        else:
            sql, args = (
                "UPDATE dispatches SET attempts = attempts + 1, last_error = ?, not_before = ?"
                " WHERE id = ?",
                (error, retry_at, dispatch_id),
            )
        rows = _record_rows(records)

        def update(db: sqlite3.Connection) -> None:
            db.execute(sql, args)
            _insert_records_of_row(db, dispatch_id, rows)

        await self._write(update)

    # -- effects ----------------------------------------------------------------------------

    def effects(self, integration: str) -> BoundEffects:
        return BoundEffects(self, integration)

    async def effect_get(self, integration: str, key: str) -> dict[str, Any] | None:
        def select(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT value FROM effects WHERE integration = ? AND key = ?", (integration, key)
            ).fetchone()
            return row[0] if row else None

        text = await self._run(select)
        return json.loads(text) if text else None

    async def effect_put(self, integration: str, key: str, value: dict[str, Any]) -> bool:
        text, now = json.dumps(value, ensure_ascii=False), self.clock.now()

        def insert(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT INTO effects (integration, key, value, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (integration, key, text, now),
            )
            return cur.rowcount == 1

        return await self._write(insert)

    async def effect_drop(self, integration: str, key: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "DELETE FROM effects WHERE integration = ? AND key = ?", (integration, key)
            )
            return cur.rowcount == 1

        return await self._write(delete)

    async def forget_links(self, subject: str, integration: str | None) -> list[tuple[str, str]]:
        """Drop the effect keys ``subject`` and ``subject:…`` (``phone:+7…``, ``call:<id>``) of
        ``integration``, or of every integration; returns the (integration, key) pairs dropped."""

        def delete(db: sqlite3.Connection) -> list[tuple[str, str]]:
            where = "(key = ? OR substr(key, 1, ?) = ?)"
            args: list[Any] = [subject, len(subject) + 1, subject + ":"]
            if integration is not None:
                where += " AND integration = ?"
                args.append(integration)
            rows = db.execute(
                f"SELECT integration, key FROM effects WHERE {where} ORDER BY rowid", args
            ).fetchall()
            db.execute(f"DELETE FROM effects WHERE {where}", args)
            return [(str(i), str(k)) for i, k in rows]

        return await self._write(delete)

    async def effect_items(
        self, integration: str, prefix: str = ""
    ) -> list[tuple[str, dict[str, Any]]]:
        def select(db: sqlite3.Connection) -> list[tuple[str, str]]:
            return db.execute(
                "SELECT key, value FROM effects WHERE integration = ?"
                " AND substr(key, 1, ?) = ? ORDER BY rowid",
                (integration, len(prefix), prefix),
            ).fetchall()

        return [(k, json.loads(v)) for k, v in await self._run(select)]

    # -- call records and the calls list ----------------------------------------------------

    async def add_call_records(
        self, account: str, call_id: str, records: Sequence[NewCallRecord]
    ) -> None:
        rows = _record_rows(records)
        await self._write(lambda db: _insert_records(db, account, call_id, rows))

    async def call_records(self, account: str, call_id: str) -> list[CallRecord]:
        def select(db: sqlite3.Connection) -> list[tuple[int, str, float, str]]:
            return db.execute(
                "SELECT id, integration, at, data FROM call_records"
                " WHERE account = ? AND call_id = ? ORDER BY id",
                (account, call_id),
            ).fetchall()

        return [
            CallRecord(id_, integration, at, callrecords.decode(data))
            for id_, integration, at, data in await self._run(select)
        ]

    async def call_events(self, account: str, call_id: str) -> list[InboxItem]:
        def select(db: sqlite3.Connection) -> list[InboxItem]:
            rows = db.execute(
                f"SELECT {self._INBOX_COLUMNS} FROM inbox"
                " WHERE account = ? AND call_id = ? ORDER BY id",
                (account, call_id),
            ).fetchall()
            return [self._inbox_item(r) for r in rows]

        return await self._run(select)

    async def find_calls(self, query: CallQuery) -> list[CallRow]:
        """Stored calls matching ``query``, newest start first.

        Walks the calls by start (``calls_started``, or ``calls_client_number`` for a number)
        and reads the per-integration status and link of the page's calls only, so a page
        costs the same with ten calls stored or a hundred thousand.
        """
        where, args = _call_filters(query)

        def select(db: sqlite3.Connection) -> list[CallRow]:
            rows = db.execute(
                "SELECT account, call_id, state FROM calls"
                f" WHERE {where} ORDER BY started_at DESC, call_id DESC LIMIT ?",
                [*args, query.limit],
            ).fetchall()
            return [
                CallRow(
                    CallState.model_validate_json(state),
                    _statuses(db, account, call_id),
                    _links(db, account, call_id),
                )
                for account, call_id, state in rows
            ]

        return await self._run(select)

    # -- inspection -------------------------------------------------------------------------

    async def seen_schemes(self, account: str) -> list[SeenScheme]:
        def select(db: sqlite3.Connection) -> list[tuple[str | None, str | None]]:
            # A call keeps its scheme path in its state; read it where it lies.
            return db.execute(
                "SELECT DISTINCT json_extract(visit.value, '$.id'),"
                " json_extract(visit.value, '$.name')"
                " FROM calls, json_each(calls.state, '$.schemes') AS visit"
                " WHERE calls.account = ? ORDER BY 1, 2",
                (account,),
            ).fetchall()

        return [SeenScheme(id_, name) for id_, name in await self._run(select)]

    async def stats(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            def one(sql: str) -> int:
                return int(db.execute(sql).fetchone()[0])

            return {
                "inbox_pending": one("SELECT count(*) FROM inbox WHERE status = 'pending'"),
                "inbox_quarantined": one("SELECT count(*) FROM inbox WHERE status = 'quarantined'"),
                "inbox_total": one("SELECT count(*) FROM inbox"),
                "calls_open": one("SELECT count(*) FROM calls WHERE finished = 0"),
                "calls_total": one("SELECT count(*) FROM calls"),
                "dispatches_pending": one(
                    "SELECT count(*) FROM dispatches WHERE status = 'pending'"
                ),
                "dispatches_dead": one("SELECT count(*) FROM dispatches WHERE status = 'dead'"),
                "rejected": one("SELECT count(*) FROM rejected"),
            }

        return await self._run(count)

    async def info(self) -> StoreInfo:
        return _info(self.path, await self._run(version_of))

    # -- retention --------------------------------------------------------------------------

    async def prune_batch(self, rule: PruneRule, cutoff: float, limit: int) -> int:
        """One batch through the group commit: a short write among the webhooks' own."""
        sql = delete_batch_sql(rule, "?", "?")
        return await self._write(lambda db: db.execute(sql, (cutoff, limit)).rowcount)

    async def count_prunable(self, rule: PruneRule, cutoff: float) -> int:
        sql = count_sql(rule, "?")
        return await self._run(lambda db: int(db.execute(sql, (cutoff,)).fetchone()[0]))

    # -- the console's own reads -------------------------------------------------------------

    async def call_links(
        self, integrations: Sequence[str], call_ids: Sequence[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The ``call:<call_id>`` link records plugins keep (``forget.py``), by (integration,
        call id)."""
        ids = list(dict.fromkeys(call_ids))
        if not ids:
            return {}
        keys = [f"call:{i}" for i in ids]
        marks = ", ".join("?" * len(keys))

        def select(db: sqlite3.Connection) -> dict[tuple[str, str], dict[str, Any]]:
            found: dict[tuple[str, str], dict[str, Any]] = {}
            for integration in integrations:
                rows = db.execute(
                    f"SELECT key, value FROM effects WHERE integration = ? AND key IN ({marks})",
                    [integration, *keys],
                ).fetchall()
                for key, value in rows:
                    record = json.loads(value)
                    if isinstance(record, dict):
                        found[(integration, key.removeprefix("call:"))] = record
            return found

        return await self._run(select)

    async def queue_depths(self) -> dict[str, QueueDepth]:
        def select(db: sqlite3.Connection) -> dict[str, QueueDepth]:
            counts: dict[str, dict[str, int]] = {}
            # A pending row tried before is retrying (as DeliveryStatus has it).
            for integration, status, count in db.execute(
                "SELECT integration, CASE WHEN status = 'pending' AND attempts > 0"
                " THEN 'retrying' ELSE status END AS shown, count(*) FROM dispatches"
                " WHERE status IN ('pending', 'dead') GROUP BY integration, shown"
            ).fetchall():
                counts.setdefault(integration, {})[status] = count
            errors = {
                integration: (error, call_id)
                for integration, error, call_id in db.execute(
                    "SELECT integration, last_error, call_id FROM dispatches WHERE id IN ("
                    " SELECT max(id) FROM dispatches WHERE last_error IS NOT NULL"
                    " AND status IN ('pending', 'dead') GROUP BY integration)"
                ).fetchall()
            }
            return {
                key: QueueDepth(
                    pending=counts.get(key, {}).get("pending", 0),
                    retrying=counts.get(key, {}).get("retrying", 0),
                    dead=counts.get(key, {}).get("dead", 0),
                    last_error=errors.get(key, (None, None))[0],
                    last_error_call=errors.get(key, (None, None))[1],
                )
                for key in sorted(set(counts) | set(errors))
            }

        return await self._run(select)

    async def recent_use(self, account: str, limit: int) -> RecentUse:
        def select(db: sqlite3.Connection) -> list[tuple[str | None, ...]]:
            # The parts needed, cut out by SQLite: parsing whole states in Python costs 5x more.
            return db.execute(
                "SELECT json_extract(state, '$.legs'), json_extract(state, '$.answers'),"
                " json_extract(state, '$.employee'), json_extract(state, '$.schemes')"
                # "+": newest first by rowid, not every call of the account through the
                # primary key.
                " FROM calls WHERE +account = ? ORDER BY rowid DESC LIMIT ?",
                (account, limit),
            ).fetchall()

        rows = await self._run(select)
        extensions: dict[str, int] = {}
        schemes: dict[tuple[str | None, str | None], None] = {}
        for legs, answers, employee, visits in rows:
            seen = {leg.get("extension") for leg in json.loads(legs or "[]")}
            seen |= {answer.get("extension") for answer in json.loads(answers or "[]")}
            seen.add(employee)
            for extension in seen - {None}:
                extensions[str(extension)] = extensions.get(str(extension), 0) + 1
            for visit in json.loads(visits or "[]"):
                schemes[(visit.get("id"), visit.get("name"))] = None
        ordered = sorted(schemes, key=lambda s: (s[0] or "", s[1] or ""))
        return RecentUse(len(rows), extensions, ordered)


def _info(path: Path, version: int) -> StoreInfo:
    return StoreInfo(backend="sqlite", where=str(path), version=version, latest=LATEST)


def _connect_existing(path: Path) -> sqlite3.Connection:
    """A connection to the database at ``path`` that never creates the file."""
    if not path.is_file():
        raise StoreUnavailable(f"{path} does not exist")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)


def inspect(path: Path) -> StoreInfo:
    """The schema version of the database at ``path`` (0: not there yet), read without
    creating, migrating or writing anything (``connector check``).

    :raises StoreUnavailable: the file is not a SQLite database, or cannot be read.
    """
    if not path.exists():
        return _info(path, 0)
    try:
        db = _connect_existing(path)
        try:
            return _info(path, version_of(db))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"{path} cannot be read as a SQLite database: {exc}") from None


def backup(source: Path, dest: Path) -> None:
    """Copy the database at ``source`` to ``dest`` consistently, while the service writes.

    SQLite's online backup copies every page in one step, so it reads one snapshot of the
    database (in WAL mode the service's writes go on meanwhile); the copy is written to a
    temporary file beside ``dest``, synced, then renamed over ``dest``, so ``dest`` is
    never a half-written file.

    :raises StoreUnavailable: ``source`` is missing or not a database, or ``dest`` cannot
        be written.
    """
    partial = dest.with_name(f".{dest.name}.partial")
    if not dest.parent.is_dir():
        raise StoreUnavailable(f"cannot back up {source} to {dest}: no folder {dest.parent}")
    try:
        db = _connect_existing(source)
        try:
            copy = sqlite3.connect(partial)
            try:
                db.backup(copy)  # pages=-1: the whole database in one step, one snapshot
            finally:
                copy.close()
        finally:
            db.close()
        with partial.open("rb+") as written:
            os.fsync(written.fileno())
        partial.chmod(0o600)  # the copy holds callers' numbers: its owner's only
        os.replace(partial, dest)
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise StoreUnavailable(f"cannot back up {source} to {dest}: {exc}") from None


class _Failed:
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
        (result,) = _insert_inbox_rows(db, [self.row])
        if isinstance(result, _Failed):
            raise result.error
        return result


@functools.cache
def _inbox_insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO inbox ({', '.join(_INBOX_COLUMNS)}) VALUES {values}"


def _insert_inbox_rows(
    db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]
) -> list[int | _Failed]:
    """Insert ``rows`` into ``inbox``, one statement per ``ROWS_PER_INSERT``; each one's id,
    or ``_Failed`` for a row that could not be stored.

    Within the write transaction nobody else inserts, and a new row's id is one more than
    the largest (``id`` is the rowid, without AUTOINCREMENT): the rows of one statement get
    consecutive ids, the last of them ``lastrowid``. A statement that fails is undone by
    SQLite alone, the transaction going on; its rows are then inserted one by one, so the
    row at fault fails alone. Raises when SQLite gave up the whole transaction.
    """
    results: list[int | _Failed] = []
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        try:
            cur = db.execute(_inbox_insert_sql(len(chunk)), [v for row in chunk for v in row])
        except Exception as exc:
            if not db.in_transaction:
                raise
            if len(chunk) == 1:
                results.append(_Failed(exc))
            else:  # each row again in a statement of its own: the one at fault fails alone
                for row in chunk:
                    results.extend(_insert_inbox_rows(db, [row]))
            continue
        last = int(cur.lastrowid or 0)
        results.extend(range(last - len(chunk) + 1, last + 1))
    return results


def _begin_immediate(db: sqlite3.Connection) -> None:
    """Begin a write transaction, waiting up to ``BUSY_TIMEOUT_MS`` for the write lock in short
    pauses (``LOCK_PAUSES``); a lock held longer fails as SQLite's own wait does.

    A transaction still open here is one whose ROLLBACK failed (an I/O error at the time): it
    is rolled back now, or every write after it would fail with "cannot start a transaction
    within a transaction" until a restart.
    """
    if db.in_transaction:
        db.execute("ROLLBACK")
    db.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        for attempt in itertools.count():
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # Any kind of busy (the extended codes too: another process recovering the
                # WAL after a crash is SQLITE_BUSY_RECOVERY), as SQLite's own wait does.
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_PAUSES[min(attempt, len(LOCK_PAUSES) - 1)])
    finally:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _commit_batch(
    db: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
) -> list[Any]:
    """Run the writes ``fns`` in one transaction, the webhooks among them by one statement
    (``_insert_inbox_rows``); one COMMIT.

    Returns each write's result, or ``_Failed`` for a write that raised (its statements are
    undone, the others stand) and for every write of a batch whose COMMIT failed.

    The writes run first without a savepoint each (two statements fewer per write, each a
    wait for the GIL while the batch holds the write lock), under one savepoint for them
    all. When one raises, they are rolled back to it and run again, in the same transaction
    (the lock is not let go), with a savepoint around each, so the one at fault fails alone.
    A write depends on the database only, so running it again after the rollback is running
    it once.
    """
    try:
        _begin_immediate(db)
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
        return [_Failed(exc)] * len(fns)
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
    ids = _insert_inbox_rows(db, [row for _, row in appends])
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
            results[i] = _Failed(exc)
        else:
            if savepoints:
                db.execute("RELEASE write")
    return results


# Where one integration's rows for one call stand (DeliveryStatus), from their aggregates.
_STATUS_OF_GROUP = (
    "CASE WHEN sum(status = 'dead') > 0 THEN 'dead'"
    " WHEN sum(status = 'pending' AND attempts > 0) > 0 THEN 'retrying'"
    " WHEN sum(status = 'pending') > 0 THEN 'pending'"
    " WHEN sum(status = 'dropped') > 0 THEN 'dropped'"
    " ELSE 'done' END"
)


def _call_filters(query: CallQuery) -> tuple[str, list[Any]]:
    """The WHERE clause over ``calls`` for ``query``, and its arguments."""
    clauses: list[str] = ["1"]
    args: list[Any] = []
    if query.since is not None:
        clauses.append("started_at >= ?")
        args.append(query.since)
    if query.before is not None and query.before_call_id is not None:
        clauses.append("(started_at, call_id) < (?, ?)")  # the list's own order
        args += [query.before, query.before_call_id]
    elif query.before is not None:
        clauses.append("started_at < ?")
        args.append(query.before)
    if query.account is not None:
        clauses.append("account = ?")
        args.append(query.account)
    if query.call_id is not None:
        clauses.append("call_id = ?")
        args.append(query.call_id)
    if query.numbers is not None:
        if not query.numbers:
            clauses.append("0")
        else:
            # The plain IN lets SQLite use the number's index; the pairs keep each number
            # to the account in whose region it was read.
            marks = ", ".join("?" for _ in query.numbers)
            pairs = ", ".join("(?, ?)" for _ in query.numbers)
            clauses.append(
                f"client_number IN ({marks}) AND (account, client_number) IN (VALUES {pairs})"
            )
            args += [number for _, number in query.numbers]
            args += [part for pair in query.numbers for part in pair]
    if query.number_digits is not None:
        clauses.append("instr(client_number, ?) > 0")
        args.append(query.number_digits)
    if query.extension is not None:
        clauses.append("instr(extensions, ?) > 0")
        args.append(f",{query.extension},")
    if query.outcome is not None:
        clauses.append("json_extract(state, '$.outcome') = ?")
        args.append(query.outcome)
    if query.status is not None or query.integration is not None:
        clause, more = _status_filter(query.status, query.integration)
        clauses.append(clause)
        args += more
    return " AND ".join(clauses), args


def _status_filter(status: DeliveryStatus | None, integration: str | None) -> tuple[str, list[Any]]:
    """The calls where an integration (any, or ``integration``) stands at ``status``.

    A status other than done is worked out only for the integrations and calls that have a
    row it needs (few); done, or no status, is asked per call walked, through the call's
    rows: most calls are done, so the walk fills a page soon.
    """
    only = " AND integration = ?" if integration is not None else ""
    named = [integration] if integration is not None else []
    if status is not None and status in ROWS_OF_STATUS:
        return (
            "(account, call_id) IN (SELECT account, call_id FROM dispatches"
            " WHERE (account, call_id, integration) IN (SELECT account, call_id, integration"
            f" FROM dispatches WHERE {ROWS_OF_STATUS[status]}{only})"
            f" GROUP BY account, call_id, integration HAVING {_STATUS_OF_GROUP} = ?)",
            [*named, status.value],
        )
    having = f" GROUP BY integration HAVING {_STATUS_OF_GROUP} = 'done'" if status else ""
    return (
        "EXISTS (SELECT 1 FROM dispatches WHERE dispatches.account = calls.account"
        f" AND dispatches.call_id = calls.call_id{only}{having})",
        named,
    )


def _statuses(db: sqlite3.Connection, account: str, call_id: str) -> dict[str, DeliveryStatus]:
    rows = db.execute(
        f"SELECT integration, {_STATUS_OF_GROUP} FROM dispatches"
        " WHERE account = ? AND call_id = ? GROUP BY integration ORDER BY min(id)",
        (account, call_id),
    ).fetchall()
    return {integration: DeliveryStatus(status) for integration, status in rows}


def _links(db: sqlite3.Connection, account: str, call_id: str) -> dict[str, str]:
    """The latest CRM link each integration's plugin reported for the call."""
    rows = db.execute(
        "SELECT record.integration, json_extract(decision.value, '$.link')"
        " FROM call_records AS record, json_each(record.data, '$.decisions') AS decision"
        " WHERE record.account = ? AND record.call_id = ? AND record.kind = 'hook'"
        " AND json_extract(decision.value, '$.link') IS NOT NULL"
        " ORDER BY record.id, decision.key",
        (account, call_id),
    ).fetchall()
    return dict(rows)


# A call record ready to insert: (integration, kind, at, data as JSON).
_RecordRow = tuple[str, str, float, str]


def _record_rows(records: Sequence[NewCallRecord]) -> list[_RecordRow]:
    """``records`` encoded, before the transaction that inserts them."""
    return [(r.integration, r.entry.kind, r.at, callrecords.encode(r.entry)) for r in records]


def _insert_records(
    db: sqlite3.Connection, account: str, call_id: str, records: Sequence[_RecordRow]
) -> None:
    """Keep ``records`` with a call: a routing record only when the decision changed; then
    the call's oldest hook calls beyond ``MAX_RECORDS_PER_CALL`` are dropped."""
    added = 0
    for integration, kind, at, data in records:
        if kind == "routing":
            last = db.execute(
                "SELECT data FROM call_records WHERE account = ? AND call_id = ?"
                " AND integration = ? AND kind = 'routing' ORDER BY id DESC LIMIT 1",
                (account, call_id, integration),
            ).fetchone()
            if last is not None and last[0] == data:
                continue
        db.execute(
            "INSERT INTO call_records (account, call_id, integration, kind, at, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (account, call_id, integration, kind, at, data),
        )
        added += 1
    if not added:
        return
    (count,) = db.execute(
        "SELECT count(*) FROM call_records WHERE account = ? AND call_id = ?", (account, call_id)
    ).fetchone()
    if count > callrecords.MAX_RECORDS_PER_CALL:
        db.execute(
            "DELETE FROM call_records WHERE id IN (SELECT id FROM call_records"
            " WHERE account = ? AND call_id = ? AND kind != 'routing' ORDER BY id LIMIT ?)",
            (account, call_id, count - callrecords.MAX_RECORDS_PER_CALL),
        )


def _insert_records_of_row(
    db: sqlite3.Connection, dispatch_id: int, records: Sequence[_RecordRow]
) -> None:
    if not records:
        return
    row = db.execute(
        "SELECT account, call_id FROM dispatches WHERE id = ?", (dispatch_id,)
    ).fetchone()
    if row is not None:
        _insert_records(db, row[0], row[1], records)


def _dispatch(row: tuple[Any, ...]) -> Dispatch:
    """A dispatch row as read with ``_DISPATCH_COLUMNS``; its record is parsed once, here."""
    (
        id_,
        account,
        call_id,
        integration,
        key,
        attempts,
        not_before,
        status,
        error,
        created,
        record,
    ) = row
    return Dispatch(
        id=id_,
        account=account,
        call_id=call_id,
        integration=integration,
        key=key,
        attempts=attempts,
        not_before=not_before,
        status=status,
        last_error=error,
        created_at=created,
        record=LifecycleEvent.model_validate_json(record) if record else None,
    )
