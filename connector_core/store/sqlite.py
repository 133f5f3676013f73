"""The embedded store: one SQLite file in WAL mode with synchronous=FULL.

Every method runs on one dedicated thread that owns the only connection, so SQLite's
blocking I/O never stalls the event loop and no two writes interleave.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from connector_core.callstate import CallState
from connector_core.clock import Clock, SystemClock
from connector_core.store.base import Dispatch, InboxItem, NewDispatch, Rejected

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    received_at REAL NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    processed_at REAL
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox(id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    account TEXT,
    received_at REAL NOT NULL,
    reason TEXT NOT NULL,
    params TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    account TEXT NOT NULL,
    call_id TEXT NOT NULL,
    state TEXT NOT NULL,
    finished INTEGER NOT NULL,
    last_received_at REAL NOT NULL,
    PRIMARY KEY (account, call_id)
);
CREATE INDEX IF NOT EXISTS calls_open ON calls(last_received_at) WHERE finished = 0;
CREATE TABLE IF NOT EXISTS dispatches (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    call_id TEXT NOT NULL,
    integration TEXT NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    done_at REAL,
    UNIQUE (integration, account, call_id, key)
);
CREATE INDEX IF NOT EXISTS dispatches_pending ON dispatches(id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS effects (
    integration TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (integration, key)
);
"""
# Refused webhooks are kept for inspection, but a flood of garbage must not fill the disk.
MAX_REJECTED = 10_000


class SQLiteStore:
    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._db is None:
            raise RuntimeError("the store is not open")
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

        def connect() -> sqlite3.Connection:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def writable(self) -> bool:
        def probe(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return True

        try:
            return await self._run(probe)
        except (sqlite3.Error, RuntimeError):
            return False

    # -- inbox ------------------------------------------------------------------------------

    async def append_event(self, account: str, params: dict[str, Any], received_at: float) -> int:
        text = json.dumps(params, ensure_ascii=False)

        def insert(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO inbox (account, received_at, params) VALUES (?, ?, ?)",
                (account, received_at, text),
            )
            return int(cur.lastrowid or 0)

        return await self._run(insert)

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

        return await self._run(insert)

    async def rejected(self, limit: int = 100) -> list[Rejected]:
        def select(db: sqlite3.Connection) -> list[Rejected]:
            rows = db.execute(
                "SELECT id, account, received_at, reason, params FROM rejected"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [Rejected(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

        return await self._run(select)

    async def pending_events(self, limit: int) -> list[InboxItem]:
        def select(db: sqlite3.Connection) -> list[InboxItem]:
            rows = db.execute(
                "SELECT id, account, received_at, params FROM inbox"
                " WHERE status = 'pending' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [InboxItem(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

        return await self._run(select)

    async def inbox_items(
        self, *, since: float = 0.0, limit: int = 1000, after_id: int = 0
    ) -> list[InboxItem]:
        """Stored events in id order, for replay."""

        def select(db: sqlite3.Connection) -> list[InboxItem]:
            rows = db.execute(
                "SELECT id, account, received_at, params FROM inbox"
                " WHERE received_at >= ? AND id > ? ORDER BY id LIMIT ?",
                (since, after_id, limit),
            ).fetchall()
            return [InboxItem(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

        return await self._run(select)

    # -- calls ------------------------------------------------------------------------------

    async def load_call(self, account: str, call_id: str) -> CallState | None:
        def select(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT state FROM calls WHERE account = ? AND call_id = ?", (account, call_id)
            ).fetchone()
            return row[0] if row else None

        text = await self._run(select)
        return CallState.model_validate_json(text) if text else None

    async def commit_event(
        self, item_id: int | None, state: CallState | None, dispatches: list[NewDispatch]
    ) -> None:
        now = self.clock.now()
        state_row = (
            (
                state.account,
                state.call_id,
                state.model_dump_json(),
                int(state.finished),
                state.last_received_at,
            )
            if state is not None
            else None
        )

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                if state_row is not None:
                    db.execute(
                        "INSERT INTO calls (account, call_id, state, finished, last_received_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, call_id) DO UPDATE SET"
                        " state = excluded.state, finished = excluded.finished,"
                        " last_received_at = excluded.last_received_at",
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
                        # constraint failure must abort the transaction.
                        "INSERT INTO dispatches"
                        " (account, call_id, integration, key, not_before, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [
                            (state.account, state.call_id, d.integration, d.key, d.not_before, now)
                            for d in dispatches
                        ],
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(write)

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
        " created_at"
    )

    async def pending_dispatches(self, limit: int) -> list[Dispatch]:
        def select(db: sqlite3.Connection) -> list[Dispatch]:
            rows = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches"
                " WHERE status = 'pending' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [Dispatch(*r) for r in rows]

        return await self._run(select)

    async def dispatches_for(self, account: str, call_id: str) -> list[Dispatch]:
        def select(db: sqlite3.Connection) -> list[Dispatch]:
            rows = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches"
                " WHERE account = ? AND call_id = ? ORDER BY id",
                (account, call_id),
            ).fetchall()
            return [Dispatch(*r) for r in rows]

        return await self._run(select)

    async def dead_dispatches(self, limit: int = 100) -> list[Dispatch]:
        def select(db: sqlite3.Connection) -> list[Dispatch]:
            rows = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches"
                " WHERE status = 'dead' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [Dispatch(*r) for r in rows]

        return await self._run(select)

    async def get_dispatch(self, dispatch_id: int) -> Dispatch | None:
        def select(db: sqlite3.Connection) -> Dispatch | None:
            row = db.execute(
                f"SELECT {self._DISPATCH_COLUMNS} FROM dispatches WHERE id = ?", (dispatch_id,)
            ).fetchone()
            return Dispatch(*row) if row else None

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

        return await self._run(update)

    async def drop_dispatch(self, dispatch_id: int) -> bool:
        """Give up on a dead-lettered row for good (it stays visible as ``dropped``)."""

        def update(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE dispatches SET status = 'dropped' WHERE id = ? AND status = 'dead'",
                (dispatch_id,),
            )
            return cur.rowcount == 1

        return await self._run(update)

    async def complete_dispatch(self, dispatch_id: int) -> None:
        now = self.clock.now()
        await self._run(
            lambda db: db.execute(
                "UPDATE dispatches SET status = 'done', done_at = ?, attempts = attempts + 1"
                " WHERE id = ?",
                (now, dispatch_id),
            )
        )

    async def fail_dispatch(self, dispatch_id: int, error: str, retry_at: float | None) -> None:
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
        await self._run(lambda db: db.execute(sql, args))

    # -- effects ----------------------------------------------------------------------------

    def effects(self, integration: str) -> SQLiteEffects:
        return SQLiteEffects(self, integration)

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

        return await self._run(insert)

    async def effect_items(self, integration: str, prefix: str = "") -> list[tuple[str, dict]]:
        def select(db: sqlite3.Connection) -> list[tuple[str, str]]:
            return db.execute(
                "SELECT key, value FROM effects WHERE integration = ?"
                " AND substr(key, 1, ?) = ? ORDER BY rowid",
                (integration, len(prefix), prefix),
            ).fetchall()

        return [(k, json.loads(v)) for k, v in await self._run(select)]

    # -- inspection -------------------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            def one(sql: str) -> int:
                return int(db.execute(sql).fetchone()[0])

            return {
                "inbox_pending": one("SELECT count(*) FROM inbox WHERE status = 'pending'"),
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


class SQLiteEffects:
    """``EffectStore`` for one integration, backed by the ``effects`` table."""

    def __init__(self, store: SQLiteStore, integration: str) -> None:
        self._store, self._integration = store, integration

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self._store.effect_get(self._integration, key)

    async def put(self, key: str, value: dict[str, Any]) -> bool:
        return await self._store.effect_put(self._integration, key, value)

    async def items(self, prefix: str = "") -> list[tuple[str, dict]]:
        return await self._store.effect_items(self._integration, prefix)
