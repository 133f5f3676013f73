"""The embedded store: one SQLite file in WAL mode with synchronous=FULL.

Every method runs on one dedicated thread that owns the store's connection, so SQLite's
blocking I/O never stalls the event loop and no two writes interleave. Writes are
group-committed (``sqlite_commit``): one transaction, and one fsync, serves every write that
queued up while the one before was being written (webhooks, worker commits, effect keys,
dispatch results); a write that fails is undone alone.

An ingest process beside a worker process appends its webhooks to the spool, a file of its
own, which the worker moves into the inbox at each drain (``spool``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connector_core import callrecords
from connector_core.callrecords import CallRecord, NewCallRecord
from connector_core.callstate import CallState, LifecycleEvent
from connector_core.clock import Clock, SystemClock
from connector_core.events import SipuniEvent
from connector_core.missed import NumberCall
from connector_core.pacing import COMPLETING_KEY
from connector_core.store import spool
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
    params_json,
    stored_event,
)
from connector_core.store.local import LocalCoordination
from connector_core.store.migrations import LATEST, migrate, version_of
from connector_core.store.number_calls_sql import dispatch_rows, number_call_row
from connector_core.store.parsed import ParsedStates
from connector_core.store.pruning import PruneRule, count_sql, delete_batch_sql
from connector_core.store.spool import Spool
from connector_core.store.sqlite_commit import GroupCommit, InboxAppend, connect
from connector_core.store.sqlite_number_calls import SQLiteNumberCalls, note_number_call

log = logging.getLogger(__name__)


class SQLiteStore(GroupCommit, SQLiteNumberCalls, LocalCoordination):
    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        GroupCommit.__init__(self)
        # One worker process per file (`connector serve`): coordination lives in memory.
        LocalCoordination.__init__(self, clock or SystemClock())
        self.path = Path(path)
        self.parsed = ParsedStates()
        # Set before ``open`` in an ingest process beside a worker process: its webhooks go
        # to the spool, a file of their own (store/spool.py), never waiting for the worker's
        # write transactions on this one.
        self.spools = False
        self._spool: Spool | None = None
        # This process's reading of the spool, to move its rows into the inbox.
        self._mover = spool.Mover(spool.path_beside(self.path))
        self._move_errors = spool.ErrorLog(
            log,
            logging.ERROR,
            "webhooks in the spool could not be moved into the inbox (%s); they stay there"
            " and the worker tries again at its next drain",
            "the spool's webhooks are moved into the inbox again",
        )
        # Since when (this store's clock) every move has failed, in this process: /readyz and
        # /metrics show it (``stats``), as the worker's rounds go on and so never look stalled.
        self._move_failing_since: float | None = None
        self._delete_errors = spool.ErrorLog(
            log,
            logging.WARNING,
            "webhooks moved into the inbox could not be deleted from the spool (%s); the"
            " next drain deletes them",
            "moved webhooks are deleted from the spool again",
        )

    # -- plumbing ---------------------------------------------------------------------------

    async def open(self) -> None:
        def make() -> sqlite3.Connection:
            db = connect(self.path)
            migrate(db)
            return db

        await self._open("sqlite", make)
        if self.spools:
            self._spool = Spool(spool.path_beside(self.path))
            self._spool.on_commit = self.on_commit
            try:
                await self._spool.open()
            except BaseException:
                await self._close()
                raise

    async def close(self) -> None:
        if self._spool is not None:
            await self._spool.close()
            self._spool = None
        if self._db is not None:
            await self._run(lambda db: self._mover.close())
        await self._close()

    async def writable(self) -> bool:
        """Whether a real write succeeds: the probe row is updated and committed (in a
        process that ``spools``, a row of the spool, where its webhooks go).

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
                if self._spool is not None:
                    return await self._spool.writable()
                return await self._write(probe)
        except (sqlite3.Error, StoreUnavailable, TimeoutError):
            return False

    def _spooled(self, db: sqlite3.Connection) -> int:
        """On the store's thread: the webhooks waiting in the spool (0 when it cannot be read:
        the move's log says why)."""
        try:
            return self._mover.pending(db)
        except sqlite3.Error:
            return 0

    async def _move_spooled(self) -> None:
        """Move what ingest processes spooled into the inbox (see store/spool.py).

        A failure is logged, not raised: the inbox's own items are processed all the same,
        and the spooled ones stay where they are until a later move succeeds.
        """
        try:
            found = await self._run(self._mover.read)
            if found is not None and found.rows:

                def move(db: sqlite3.Connection) -> int:
                    return spool.move(db, found)

                await self._write(move)
        except spool.MovedElsewhere:
            self._move_failing_since = None
            return  # by another process: nothing is wrong
        except (spool.SpoolError, sqlite3.Error, StoreUnavailable) as exc:
            if self._move_failing_since is None:
                self._move_failing_since = self.clock.now()
            self._move_errors.error(exc)
            if isinstance(exc, sqlite3.DatabaseError):  # the next read opens the file afresh
                await self._run(lambda db: self._mover.reopen())
            return
        self._move_errors.ok()
        self._move_failing_since = None
        if found is None:
            return
        try:
            await self._run(lambda db: self._mover.delete(found))
        except (sqlite3.Error, StoreUnavailable) as exc:
            self._delete_errors.error(exc)
        else:
            self._delete_errors.ok()

    # -- inbox ------------------------------------------------------------------------------

    async def append_event(
        self,
        account: str,
        params: dict[str, Any],
        received_at: float,
        event: SipuniEvent | None = None,
    ) -> int:
        """Store one webhook; returns its inbox id (its spool id in a process that ``spools``)
        once the transaction holding it is durable.

        Group commit (see the module doc): appends that arrive while a transaction is being
        written go together into the next one, so one fsync serves many webhooks.
        """
        row = (
            account,
            call_id_of(params),
            received_at,
            params_json(params),
            event.model_dump_json() if event is not None else None,
        )
        if self._spool is not None:
            item_id: int = await self._spool.append(row)
        elif self.spools:  # closed: not to the inbox, which would put it before older ones
            raise StoreUnavailable("the store is not open")
        else:
            item_id = await self._write(InboxAppend(row))
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
        if after_id == 0:  # a drain's first page: what ingest processes spooled comes first
            await self._move_spooled()

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
            # All or nothing: a write that fails is undone alone (see sqlite_commit).
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
        found = await self._run(lambda db: _group_rows(db, integration, account, call_id))
        return self._group_work(found)

    def _group_work(self, found: list[tuple[Any, ...]]) -> GroupWork:
        """A group's rows as ``_group_rows`` read them, each ending with the call's state."""
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
        await self._write(lambda db: _update_dispatch(db, _COMPLETE_SQL, (now, dispatch_id), rows))

    async def complete_and_read_group(
        self, row: Dispatch, records: Sequence[NewCallRecord] = ()
    ) -> GroupWork:
        now, rows = self.clock.now(), _record_rows(records)

        def update(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            db.execute(_COMPLETE_SQL, (now, row.id))
            _insert_records(db, row.account, row.call_id, rows)
            return _group_rows(db, row.integration, row.account, row.call_id)

        return self._group_work(await self._write(update))

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
        await self._write(lambda db: _update_dispatch(db, sql, args, rows))

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
                # Spooled webhooks are pending too: the worker has yet to process them.
                "inbox_pending": one("SELECT count(*) FROM inbox WHERE status = 'pending'")
                + self._spooled(db),
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

        counts = await self._run(count)
        since = self._move_failing_since
        # Whole seconds, at least 1 while failing: 0 says the moves succeed.
        counts["spool_failing_seconds"] = (
            0 if since is None else max(1, int(self.clock.now() - since))
        )
        return counts

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


def _update_dispatch(
    db: sqlite3.Connection, sql: str, args: tuple[object, ...], records: Sequence[_RecordRow]
) -> None:
    """Run ``sql`` on the row whose id is its last argument, and keep ``records`` with its
    call. (Not ``UPDATE … RETURNING``: that needs SQLite 3.35, newer than Debian 11's or
    Ubuntu 20.04's, where every hook result would fail to be written and its hook run again.)"""
    db.execute(sql, args)
    if not records:
        return
    found = db.execute(
        "SELECT account, call_id FROM dispatches WHERE id = ?", (args[-1],)
    ).fetchone()
    if found is not None:
        _insert_records(db, found[0], found[1], records)


_COMPLETE_SQL = (
    "UPDATE dispatches SET status = 'done', done_at = ?, attempts = attempts + 1 WHERE id = ?"
)


def _group_rows(
    db: sqlite3.Connection, integration: str, account: str, call_id: str
) -> list[tuple[Any, ...]]:
    """A group's pending rows in order, each with its call's state as a last column."""
    # One statement, one snapshot: the state holds every event that made the rows.
    # The state's subquery does not depend on the row: SQLite reads it once.
    return db.execute(
        f"SELECT {SQLiteStore._DISPATCH_COLUMNS}, (SELECT state FROM calls"
        " WHERE account = ?1 AND call_id = ?2) FROM dispatches"
        " WHERE status = 'pending' AND integration = ?3 AND account = ?1"
        " AND call_id = ?2 ORDER BY id",
        (account, call_id, integration),
    ).fetchall()


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
