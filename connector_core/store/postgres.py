"""The shared store: PostgreSQL through asyncpg, for several processes on several hosts.

It keeps the guarantees of ``base.Store`` as the SQLite store does, with the same tables
(``pg_migrations.py``), and does the coordination for real: leases in a table timed by the
database's clock (hosts' clocks may differ), cluster-wide locks as session advisory locks
(the server frees them when the holder's connection dies), rate windows counted under a
transaction advisory lock, and channels through ``LISTEN``/``NOTIFY``.

Each write is one transaction of its own and returns once PostgreSQL has committed it (with
the server's default ``synchronous_commit``, durable). Locks are held on connections of a pool
of their own: a process waiting for many locks cannot take the connections that the holders
of those locks need for their work.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg

from connector_core import callrecords
from connector_core.callrecords import CallRecord, NewCallRecord
from connector_core.callstate import CallState, LifecycleEvent
from connector_core.clock import Clock, SystemClock
from connector_core.events import SipuniEvent
from connector_core.hooktime import queue_wait
from connector_core.integrations import KeyedLocks
from connector_core.missed import NumberCall
from connector_core.pacing import COMPLETING_KEY
from connector_core.store import pg_migrations
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
    StoredAuth,
    StoreInfo,
    StoreUnavailable,
    call_id_of,
    extensions_column,
    params_json,
    stored_event,
)
from connector_core.store.number_calls_sql import dispatch_rows
from connector_core.store.parsed import ParsedStates
from connector_core.store.pg_number_calls import PostgresNumberCalls, note_number_call
from connector_core.store.pruning import PruneRule, count_sql, delete_batch_sql
from connector_core.store.urls import masked_url, url_password

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by a pool: a statement runs on either.
    _Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "connector_"  # NOTIFY channels are database-wide: keep to ours
CONNECT_TIMEOUT = 10.0  # seconds to reach the server before the store says it cannot
LISTEN_CHECK_SECONDS = 5.0  # how often the listening connection is proved alive
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # waits between attempts to listen again
# Pauses between tries of a cluster-wide lock another process holds: growing to the maximum.
LOCK_RETRY_FIRST, LOCK_RETRY_MAX = 0.01, 0.2
# Rate grants older than this are deleted, now and then: no window looks further back.
RATE_GRANTS_KEPT = 300.0
# The database's clock, in epoch seconds: one clock for every host.
_NOW = "extract(epoch from clock_timestamp())::double precision"

# Where one integration's rows for one call stand (DeliveryStatus), from their aggregates.
_STATUS_OF_GROUP = (
    "CASE WHEN bool_or(status = 'dead') THEN 'dead'"
    " WHEN bool_or(status = 'pending' AND attempts > 0) THEN 'retrying'"
    " WHEN bool_or(status = 'pending') THEN 'pending'"
    " WHEN bool_or(status = 'dropped') THEN 'dropped'"
    " ELSE 'done' END"
)
_INBOX_COLUMNS = "id, account, received_at, params, status, attempts, last_error, event"
_DISPATCH_COLUMNS = (
    "id, account, call_id, integration, key, attempts, not_before, status, last_error,"
    " created_at, record"
)


def _where(url: str) -> str:
    """The server a URL names, as a person checks it: ``host:port``."""
    parts = urlsplit(url)
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    return f"{parts.hostname or 'localhost'}:{port}"


async def _unchanged(_conn: asyncpg.Connection) -> None:
    """The work pool's reset: none. Its connections never change their session (no SET, no
    LISTEN, no session lock: those live on the listening connection and the lock pool), and
    asyncpg's default reset is a round trip to the server on every release."""


class PostgresStore(PostgresNumberCalls):
    """``Store`` on PostgreSQL (see the module doc)."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        min_size: int = 1,
        max_size: int = 10,
    ) -> None:
        self.url = url
        self.clock = clock or SystemClock()
        self.parsed = ParsedStates()
        self._min_size, self._max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        # The session holding this process's cluster-wide locks (see ``lock``), opened on
        # first use; the mutex keeps its statements one at a time.
        self._lock_session: asyncpg.Connection[asyncpg.Record] | None = None
        self._lock_mutex = asyncio.Lock()
        self._open = False
        # A name is held by one task of the process at a time, before the session tries it.
        self._local_locks = KeyedLocks()
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None
        self._listened: set[str] = set()  # the channels self._listener listens on
        self._listener_lost = asyncio.Event()

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        return self._pool

    async def _connect(self) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise self._unreachable(exc) from exc
        return conn

    def _unreachable(self, exc: BaseException) -> StoreUnavailable:
        reason = str(exc) or type(exc).__name__
        if self._password() and self._password() in reason:
            reason = reason.replace(self._password(), "***")
        return StoreUnavailable(
            f"cannot use PostgreSQL at {_where(self.url)} ({masked_url(self.url)}): {reason};"
            " check that the server runs there and that [storage] url (or CONNECTOR_STORAGE_URL)"
            " names it, its database and a user allowed in"
        )

    def _password(self) -> str:
        return url_password(self.url) or ""

    async def open(self) -> None:
        conn = await self._connect()
        try:
            await pg_migrations.migrate(conn)
        finally:
            await conn.close()
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self._min_size, max_size=self._max_size, reset=_unchanged
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._close_pools()
            raise self._unreachable(exc) from exc
        self._open = True
        if self._subscribers:
            self._listener = await self._listen()
        self._listening = asyncio.create_task(self._keep_listening(), name="pg-listen")

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            try:
                await self._listening
            except asyncio.CancelledError:
                pass
            self._listening = None
        if self._listener is not None:
            self._listener.terminate()
            self._listener = None
        await self._close_pools()

    async def _close_pools(self) -> None:
        self._open = False
        if self._pool is not None:
            await self._pool.close()
        self._pool = None
        if self._lock_session is not None:
            self._lock_session.terminate()  # the server frees the session's locks
            self._lock_session = None

    async def writable(self) -> bool:
        """Whether a real write succeeds: the probe row is updated and committed within
        ``PROBE_TIMEOUT`` seconds."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                status = await self._db.execute(
                    "UPDATE probe SET written_at = $1 WHERE id = 1", self.clock.now()
                )
        except (
            OSError,
            TimeoutError,
            StoreUnavailable,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ):
            return False
        return bool(status == "UPDATE 1")

    async def info(self) -> StoreInfo:
        """Backend, the URL with its password masked, and the schema version found."""
        return await inspect(self.url)

    # -- inbox ------------------------------------------------------------------------------

    async def prune_batch(self, rule: PruneRule, cutoff: float, limit: int) -> int:
        """One batch, one short transaction of its own."""
        status = await self._db.execute(delete_batch_sql(rule, "$1", "$2"), cutoff, limit)
        return int(status.split()[-1])  # "DELETE <n>"

    async def count_prunable(self, rule: PruneRule, cutoff: float) -> int:
        return int(await self._db.fetchval(count_sql(rule, "$1"), cutoff))

    async def append_event(
        self,
        account: str,
        params: dict[str, Any],
        received_at: float,
        event: SipuniEvent | None = None,
    ) -> int:
        # Stored and announced in one statement: one round trip per webhook, and the workers
        # are woken when (and only if) the row is committed.
        return int(
            await self._db.fetchval(
                "WITH row AS (INSERT INTO inbox (account, call_id, received_at, params, event)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id)"
                f" SELECT id FROM row, pg_notify('{CHANNEL_PREFIX}{INBOX_CHANNEL}', '')",
                account,
                call_id_of(params),
                received_at,
                params_json(params),
                event.model_dump_json() if event is not None else None,
            )
        )

    async def record_rejected(
        self, account: str | None, params: dict[str, Any], reason: str, received_at: float
    ) -> int:
        async with self._db.acquire() as conn, conn.transaction():
            row_id = int(
                await conn.fetchval(
                    "INSERT INTO rejected (account, received_at, reason, params)"
                    " VALUES ($1, $2, $3, $4) RETURNING id",
                    account,
                    received_at,
                    reason,
                    json.dumps(params, ensure_ascii=False),
                )
            )
            if row_id % 100 == 0:
                await conn.execute("DELETE FROM rejected WHERE id <= $1", row_id - MAX_REJECTED)
        return row_id

    async def rejected(self, limit: int = 100) -> list[Rejected]:
        rows = await self._db.fetch(
            "SELECT id, account, received_at, reason, params FROM rejected"
            " ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [Rejected(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    async def _inbox(self, where: str, *args: Any) -> list[InboxItem]:
        rows = await self._db.fetch(f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE {where}", *args)
        return [
            InboxItem(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], stored_event(r[7]))
            for r in rows
        ]

    async def pending_events(self, limit: int, after_id: int = 0) -> list[InboxItem]:
        """The oldest pending items above ``after_id`` of calls no process holds the lease of.

        Without the lease filter every worker is handed the same oldest items, takes none of
        the calls another worker holds, and must page on past them (``Worker.drain``, a
        round trip a page). The lease name is ``cluster.call_lease``'s.
        """
        return await self._inbox(
            "status = 'pending' AND id > $2 AND NOT EXISTS (SELECT 1 FROM leases WHERE"
            " leases.name = 'call:' || inbox.account || '/' || coalesce(inbox.call_id, '#' ||"
            f" inbox.id) AND leases.expires_at > {_NOW}) ORDER BY id LIMIT $1",
            limit,
            after_id,
        )

    async def fail_event(self, item_id: int, error: str, *, quarantine: bool) -> None:
        await self._db.execute(
            "UPDATE inbox SET attempts = attempts + 1, last_error = $1, status = $2"
            " WHERE id = $3 AND status = 'pending'",
            error,
            "quarantined" if quarantine else "pending",
            item_id,
        )

    async def quarantined_events(self, limit: int = 100) -> list[InboxItem]:
        return await self._inbox("status = 'quarantined' ORDER BY id LIMIT $1", limit)

    async def get_event(self, item_id: int) -> InboxItem | None:
        found = await self._inbox("id = $1", item_id)
        return found[0] if found else None

    async def requeue_event(self, item_id: int) -> bool:
        status = await self._db.execute(
            "UPDATE inbox SET status = 'pending', attempts = 0"
            " WHERE id = $1 AND status = 'quarantined'",
            item_id,
        )
        return _count(status) == 1

    async def drop_event(self, item_id: int) -> bool:
        status = await self._db.execute(
            "UPDATE inbox SET status = 'dropped' WHERE id = $1 AND status = 'quarantined'",
            item_id,
        )
        return _count(status) == 1

    async def inbox_items(
        self, *, since: float = 0.0, limit: int = 1000, after_id: int = 0
    ) -> list[InboxItem]:
        return await self._inbox(
            "received_at >= $1 AND id > $2 ORDER BY id LIMIT $3", since, after_id, limit
        )

    async def call_events(self, account: str, call_id: str) -> list[InboxItem]:
        return await self._inbox("account = $1 AND call_id = $2 ORDER BY id", account, call_id)

    # -- calls ------------------------------------------------------------------------------

    async def load_call(self, account: str, call_id: str) -> CallState | None:
        text = await self._db.fetchval(
            "SELECT state FROM calls WHERE account = $1 AND call_id = $2", account, call_id
        )
        return self.parsed.parse(text) if text else None

    async def load_calls(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], CallState]:
        if not keys:
            return {}
        rows = await self._db.fetch(
            "SELECT account, call_id, state FROM calls WHERE (account, call_id) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[]))",
            [account for account, _ in keys],
            [call_id for _, call_id in keys],
        )
        return {(r[0], r[1]): self.parsed.parse(r[2]) for r in rows}

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
        async with self._db.acquire() as conn, conn.transaction():  # all or nothing
            if state is not None:
                await conn.execute(
                    "INSERT INTO calls (account, call_id, state, finished, last_received_at,"
                    " started_at, client_number, extensions)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (account, call_id) DO UPDATE SET"
                    " state = excluded.state, finished = excluded.finished,"
                    " last_received_at = excluded.last_received_at,"
                    " started_at = excluded.started_at, client_number = excluded.client_number,"
                    " extensions = excluded.extensions",
                    state.account,
                    state.call_id,
                    self.parsed.dumped(state),
                    state.finished,
                    state.last_received_at,
                    state.started_at if state.started_at is not None else state.last_received_at,
                    state.client_number,
                    extensions_column(state),
                )
            if item_id is not None:
                await conn.execute(
                    "UPDATE inbox SET status = 'done', processed_at = $1 WHERE id = $2",
                    now,
                    item_id,
                )
            if state is not None:
                if dispatches:
                    await conn.executemany(
                        # Only a repeated (integration, call, key) is ignored; any other
                        # constraint failure must abort the write.
                        "INSERT INTO dispatches"
                        " (account, call_id, integration, key, record, not_before, created_at)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
                        " ON CONFLICT (integration, account, call_id, key) DO NOTHING",
                        dispatch_rows(state.account, [(state.call_id, d) for d in dispatches], now),
                    )
                    # Delivered at COMMIT: the dispatchers wake for rows they can see.
                    await conn.execute(
                        "SELECT pg_notify($1, '')", CHANNEL_PREFIX + DISPATCH_CHANNEL
                    )
                await _insert_records(conn, state.account, state.call_id, records)
                if number_call is not None and state.client_number:
                    await note_number_call(
                        conn, state.account, state.client_number, number_call, now
                    )

    async def idle_open_calls(self, idle_before: float, limit: int) -> list[CallState]:
        rows = await self._db.fetch(
            "SELECT state FROM calls WHERE NOT finished AND last_received_at < $1"
            " ORDER BY last_received_at LIMIT $2",
            idle_before,
            limit,
        )
        return [CallState.model_validate_json(r[0]) for r in rows]

    # -- dispatches -------------------------------------------------------------------------

    async def _dispatches(self, where: str, *args: Any) -> list[Dispatch]:
        rows = await self._db.fetch(
            f"SELECT {_DISPATCH_COLUMNS} FROM dispatches WHERE {where}", *args
        )
        return [_dispatch(r) for r in rows]

    async def pending_dispatches(self, limit: int) -> list[Dispatch]:
        return await self._dispatches("status = 'pending' ORDER BY id LIMIT $1", limit)

    async def due_heads(self, integration: str, now: float, limit: int) -> list[DueHead]:
        """The first pending row of each of ``integration``'s calls whose turn has come, for
        the calls no process holds the dispatch lease of (``cluster.dispatch_lease``'s name):
        as for ``pending_events``, each dispatcher is handed groups it can take. The calls
        that hung up come first (their ``finished`` row, ``pacing.COMPLETING_KEY``, waits in
        the group: ``DueHead.completes_call``), then by age."""
        rows = await self._db.fetch(
            "SELECT id, integration, account, call_id, key, g.completes FROM dispatches JOIN ("
            " SELECT min(id) AS head, bool_or(key = $4) AS completes FROM dispatches"
            " WHERE status = 'pending' AND integration = $1 GROUP BY account, call_id"
            ") AS g ON dispatches.id = g.head"
            " WHERE not_before <= $2 AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.name ="
            " 'dispatch:' || dispatches.integration || '/' || dispatches.account || '/'"
            f" || dispatches.call_id AND leases.expires_at > {_NOW})"
            " ORDER BY g.completes DESC, dispatches.id LIMIT $3",
            integration,
            now,
            limit,
            COMPLETING_KEY,
        )
        return [DueHead(r[0], r[1], r[2], r[3], r[4], completes_call=r[5]) for r in rows]

    async def pending_in_group(
        self, integration: str, account: str, call_id: str
    ) -> list[Dispatch]:
        return await self._dispatches(
            "status = 'pending' AND integration = $1 AND account = $2 AND call_id = $3 ORDER BY id",
            integration,
            account,
            call_id,
        )

    async def group_work(self, integration: str, account: str, call_id: str) -> GroupWork:
        return self._group_work(await _group_rows(self._db, integration, account, call_id))

    def _group_work(self, found: Sequence[asyncpg.Record]) -> GroupWork:
        """A group's rows as ``_group_rows`` read them, each ending with the call's state."""
        state = found[0][-1] if found else None
        return GroupWork(
            [_dispatch(r) for r in found],
            self.parsed.parse(state) if state else None,
        )

    async def dispatches_for(self, account: str, call_id: str) -> list[Dispatch]:
        return await self._dispatches("account = $1 AND call_id = $2 ORDER BY id", account, call_id)

    async def dead_dispatches(self, limit: int = 100) -> list[Dispatch]:
        return await self._dispatches("status = 'dead' ORDER BY id LIMIT $1", limit)

    async def get_dispatch(self, dispatch_id: int) -> Dispatch | None:
        found = await self._dispatches("id = $1", dispatch_id)
        return found[0] if found else None

    async def requeue_dispatch(self, dispatch_id: int) -> bool:
        now = self.clock.now()
        status = await self._db.execute(
            "UPDATE dispatches SET status = 'pending', attempts = 0, not_before = $1,"
            " created_at = $1 WHERE id = $2 AND status = 'dead'",
            now,
            dispatch_id,
        )
        return _count(status) == 1

    async def drop_dispatch(self, dispatch_id: int) -> bool:
        status = await self._db.execute(
            "UPDATE dispatches SET status = 'dropped' WHERE id = $1 AND status = 'dead'",
            dispatch_id,
        )
        return _count(status) == 1

    async def complete_dispatch(
        self, dispatch_id: int, records: Sequence[NewCallRecord] = ()
    ) -> None:
        await self._update_dispatch(
            "UPDATE dispatches SET status = 'done', done_at = $2, attempts = attempts + 1"
            " WHERE id = $1 RETURNING account, call_id",
            [dispatch_id, self.clock.now()],
            records,
        )

    async def complete_and_read_group(
        self, row: Dispatch, records: Sequence[NewCallRecord] = ()
    ) -> GroupWork:
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE dispatches SET status = 'done', done_at = $2, attempts = attempts + 1"
                " WHERE id = $1",
                row.id,
                self.clock.now(),
            )
            await _insert_records(conn, row.account, row.call_id, records)
            found = await _group_rows(conn, row.integration, row.account, row.call_id)
        return self._group_work(found)

    async def fail_dispatch(
        self,
        dispatch_id: int,
        error: str,
        retry_at: float | None,
        records: Sequence[NewCallRecord] = (),
    ) -> None:
        if retry_at is None:
            sql = "status = 'dead', attempts = attempts + 1, last_error = $2"
            args: list[Any] = [dispatch_id, error]
        else:
            sql = "attempts = attempts + 1, last_error = $2, not_before = $3"
            args = [dispatch_id, error, retry_at]
        await self._update_dispatch(
            f"UPDATE dispatches SET {sql} WHERE id = $1 RETURNING account, call_id", args, records
        )

    async def _update_dispatch(
        self, sql: str, args: list[Any], records: Sequence[NewCallRecord]
    ) -> None:
        """Run ``sql`` on one row (returning its call) and keep ``records`` with that call."""
        async with self._db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql, *args)
            if row is not None:
                await _insert_records(conn, row[0], row[1], records)

    # -- effects ----------------------------------------------------------------------------

    def effects(self, integration: str) -> BoundEffects:
        return BoundEffects(self, integration)

    async def effect_get(self, integration: str, key: str) -> dict[str, Any] | None:
        text = await self._db.fetchval(
            "SELECT value FROM effects WHERE integration = $1 AND key = $2", integration, key
        )
        return json.loads(text) if text else None

    async def effect_put(self, integration: str, key: str, value: dict[str, Any]) -> bool:
        inserted = await self._db.fetchval(
            "INSERT INTO effects (integration, key, value, created_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (integration, key) DO NOTHING RETURNING true",
            integration,
            key,
            json.dumps(value, ensure_ascii=False),
            self.clock.now(),
        )
        return bool(inserted)

    async def effect_drop(self, integration: str, key: str) -> bool:
        status = await self._db.execute(
            "DELETE FROM effects WHERE integration = $1 AND key = $2", integration, key
        )
        return _count(status) == 1

    async def effect_items(
        self, integration: str, prefix: str = ""
    ) -> list[tuple[str, dict[str, Any]]]:
        rows = await self._db.fetch(
            "SELECT key, value FROM effects WHERE integration = $1 AND starts_with(key, $2)"
            " ORDER BY seq",
            integration,
            prefix,
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    async def forget_links(self, subject: str, integration: str | None) -> list[tuple[str, str]]:
        """Drop the effect keys ``subject`` and ``subject:…`` of ``integration`` (or of every
        integration); returns the (integration, key) pairs dropped, in the order put."""
        rows = await self._db.fetch(
            "DELETE FROM effects WHERE (key = $1 OR starts_with(key, $1 || ':'))"
            " AND ($2::text IS NULL OR integration = $2) RETURNING seq, integration, key",
            subject,
            integration,
        )
        return [(r[1], r[2]) for r in sorted(rows, key=lambda r: int(r[0]))]

    # -- call records and the calls list ----------------------------------------------------

    async def add_call_records(
        self, account: str, call_id: str, records: Sequence[NewCallRecord]
    ) -> None:
        async with self._db.acquire() as conn, conn.transaction():
            await _insert_records(conn, account, call_id, records)

    async def call_records(self, account: str, call_id: str) -> list[CallRecord]:
        rows = await self._db.fetch(
            "SELECT id, integration, at, data FROM call_records"
            " WHERE account = $1 AND call_id = $2 ORDER BY id",
            account,
            call_id,
        )
        return [CallRecord(r[0], r[1], r[2], callrecords.decode(r[3])) for r in rows]

    async def find_calls(self, query: CallQuery) -> list[CallRow]:
        """Stored calls matching ``query``, newest start first; the page's statuses and links
        are read for the page's calls only, in one query each."""
        where, args = _call_filters(query)
        args.append(query.limit)
        async with self._db.acquire() as conn, conn.transaction(readonly=True):
            rows = await conn.fetch(
                "SELECT account, call_id, state FROM calls"
                f" WHERE {where} ORDER BY started_at DESC, call_id DESC LIMIT ${len(args)}",
                *args,
            )
            accounts, call_ids = [r[0] for r in rows], [r[1] for r in rows]
            statuses: dict[tuple[str, str], dict[str, DeliveryStatus]] = {}
            for account, call_id, integration, status in await conn.fetch(
                f"SELECT account, call_id, integration, {_STATUS_OF_GROUP} FROM dispatches"
                f" WHERE {_PAGE} GROUP BY account, call_id, integration ORDER BY min(id)",
                accounts,
                call_ids,
            ):
                statuses.setdefault((account, call_id), {})[integration] = DeliveryStatus(status)
            links: dict[tuple[str, str], dict[str, str]] = {}
            for account, call_id, integration, link in await conn.fetch(
                "SELECT account, call_id, integration, decision.value ->> 'link'"
                " FROM call_records, jsonb_array_elements(CASE WHEN jsonb_typeof("
                "  data::jsonb -> 'decisions') = 'array' THEN data::jsonb -> 'decisions'"
                "  ELSE '[]' END) WITH ORDINALITY AS decision(value, n)"
                f" WHERE {_PAGE} AND kind = 'hook' AND decision.value ->> 'link' IS NOT NULL"
                " ORDER BY id, decision.n",
                accounts,
                call_ids,
            ):
                links.setdefault((account, call_id), {})[integration] = link
        return [
            CallRow(
                CallState.model_validate_json(r[2]),
                statuses.get((r[0], r[1]), {}),
                links.get((r[0], r[1]), {}),
            )
            for r in rows
        ]

    # -- inspection -------------------------------------------------------------------------

    async def seen_schemes(self, account: str) -> list[SeenScheme]:
        rows = await self._db.fetch(
            "SELECT id, name FROM (SELECT DISTINCT visit ->> 'id' AS id,"
            " visit ->> 'name' AS name"
            " FROM calls, jsonb_array_elements(state::jsonb -> 'schemes') AS visit"
            " WHERE account = $1 AND jsonb_typeof(state::jsonb -> 'schemes') = 'array') AS seen"
            # SQLite's order: NULL first, then byte by byte.
            ' ORDER BY id COLLATE "C" NULLS FIRST, name COLLATE "C" NULLS FIRST',
            account,
        )
        return [SeenScheme(r[0], r[1]) for r in rows]

    async def stats(self) -> dict[str, int]:
        row = await self._db.fetchrow(
            "SELECT"
            " (SELECT count(*) FROM inbox WHERE status = 'pending'),"
            " (SELECT count(*) FROM inbox WHERE status = 'quarantined'),"
            " (SELECT count(*) FROM inbox),"
            " (SELECT count(*) FROM calls WHERE NOT finished),"
            " (SELECT count(*) FROM calls),"
            " (SELECT count(*) FROM dispatches WHERE status = 'pending'),"
            " (SELECT count(*) FROM dispatches WHERE status = 'dead'),"
            " (SELECT count(*) FROM rejected)"
        )
        names = (
            "inbox_pending",
            "inbox_quarantined",
            "inbox_total",
            "calls_open",
            "calls_total",
            "dispatches_pending",
            "dispatches_dead",
            "rejected",
        )
        assert row is not None  # a SELECT without FROM returns its one row
        return {name: int(value) for name, value in zip(names, row, strict=True)}

    # -- the console's own reads ------------------------------------------------------------

    async def call_links(
        self, integrations: Sequence[str], call_ids: Sequence[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The ``call:<call_id>`` effect records plugins keep, by (integration, call id)."""
        if not call_ids or not integrations:
            return {}
        rows = await self._db.fetch(
            "SELECT integration, key, value FROM effects"
            " WHERE integration = ANY($1::text[]) AND key = ANY($2::text[])",
            list(integrations),
            [f"call:{i}" for i in dict.fromkeys(call_ids)],
        )
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for integration, key, value in rows:
            record = json.loads(value)
            if isinstance(record, dict):
                found[(integration, key.removeprefix("call:"))] = record
        return found

    async def queue_depths(self) -> dict[str, QueueDepth]:
        """Per integration: hook calls waiting, retrying and dead, and the newest error."""
        async with self._db.acquire() as conn, conn.transaction(readonly=True):
            counts = await conn.fetch(
                "SELECT integration,"
                " count(*) FILTER (WHERE status = 'pending' AND attempts = 0),"
                " count(*) FILTER (WHERE status = 'pending' AND attempts > 0),"
                " count(*) FILTER (WHERE status = 'dead')"
                " FROM dispatches WHERE status IN ('pending', 'dead') GROUP BY integration"
            )
            errors = await conn.fetch(
                "SELECT integration, last_error, call_id FROM dispatches WHERE id IN ("
                " SELECT max(id) FROM dispatches WHERE last_error IS NOT NULL"
                " AND status IN ('pending', 'dead') GROUP BY integration)"
            )
        depths = {r[0]: QueueDepth(pending=r[1], retrying=r[2], dead=r[3]) for r in counts}
        for integration, error, call_id in errors:
            depth = depths.get(integration, QueueDepth())
            depths[integration] = QueueDepth(
                depth.pending, depth.retrying, depth.dead, error, call_id
            )
        return {key: depths[key] for key in sorted(depths)}

    async def recent_use(self, account: str, limit: int) -> RecentUse:
        """Extensions and schemes of the latest ``limit`` calls of ``account``, worked out by
        the server from the call states."""
        async with self._db.acquire() as conn, conn.transaction(readonly=True):
            calls = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM calls WHERE account = $1"
                " ORDER BY seq DESC LIMIT $2) AS recent",
                account,
                limit,
            )
            extensions = await conn.fetch(
                f"WITH {_RECENT} SELECT extension, count(*) FROM recent, LATERAL ("
                " SELECT jsonb_path_query(s, 'lax $.legs[*].extension') #>> '{}'"
                " UNION SELECT jsonb_path_query(s, 'lax $.answers[*].extension') #>> '{}'"
                " UNION SELECT s ->> 'employee') AS seen(extension)"
                " WHERE extension IS NOT NULL GROUP BY extension ORDER BY extension",
                account,
                limit,
            )
            schemes = await conn.fetch(
                f"WITH {_RECENT} SELECT DISTINCT visit ->> 'id', visit ->> 'name',"
                " coalesce(visit ->> 'id', '') COLLATE \"C\","
                " coalesce(visit ->> 'name', '') COLLATE \"C\""
                " FROM recent, jsonb_path_query(s, 'lax $.schemes[*]') AS visit"
                " ORDER BY 3, 4",
                account,
                limit,
            )
        return RecentUse(
            int(calls),
            {str(r[0]): int(r[1]) for r in extensions},
            [(r[0], r[1]) for r in schemes],
        )

    # -- coordination -----------------------------------------------------------------------

    async def take_leases(self, names: Sequence[str], owner: str, ttl: float) -> set[str]:
        """Take each lease that is free, expired or ``owner``'s, in one statement; names in
        one order, so two batches that overlap never wait for each other in a circle."""
        if not names:
            return set()
        rows = await self._db.fetch(
            "INSERT INTO leases (name, owner, expires_at)"
            f" SELECT name, $2, {_NOW} + $3 FROM unnest($1::text[]) AS name ORDER BY name"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at"
            f" WHERE leases.owner = excluded.owner OR leases.expires_at <= {_NOW}"
            " RETURNING name",
            sorted(set(names)),
            owner,
            ttl,
        )
        return {r[0] for r in rows}

    async def renew_leases(self, owner: str, ttl: float) -> int:
        status = await self._db.execute(
            f"UPDATE leases SET expires_at = {_NOW} + $2 WHERE owner = $1 AND expires_at > {_NOW}",
            owner,
            ttl,
        )
        return _count(status)

    async def release_leases(self, owner: str, names: Sequence[str] | None = None) -> None:
        if names is None:
            await self._db.execute("DELETE FROM leases WHERE owner = $1", owner)
        elif names:
            await self._db.execute(
                "DELETE FROM leases WHERE owner = $1 AND name = ANY($2::text[])",
                owner,
                list(names),
            )

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """Hold the cluster-wide lock ``name``: a session advisory lock, freed by the server
        if this process dies (its session ends).

        Every lock of the process lives on one session, taken with ``pg_try_advisory_lock``
        and tried again after a short, growing pause while another process holds it. A
        session per held lock (a pool) deadlocks once locks nest: with the pool's every
        connection held by an outer lock, no inner lock can get a connection, and no outer
        one is let go. One session never waits inside the server, so it cannot. The process's
        own callers of one name queue first (``KeyedLocks``), so the session's re-entrant
        counting never comes into play.
        """
        async with self._local_locks(name):
            pause = LOCK_RETRY_FIRST
            async with queue_wait():
                while not await self._lock_statement("pg_try_advisory_lock", name):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, LOCK_RETRY_MAX)
            try:
                yield
            finally:
                await self._lock_statement("pg_advisory_unlock", name)

    async def _lock_statement(self, function: str, name: str) -> bool:
        """Run ``function(name)`` on the lock session; a statement cut short by cancellation
        still completes, and a lock it took is let go, so none is left behind."""
        run = asyncio.ensure_future(self._on_lock_session(function, name))
        try:
            return await asyncio.shield(run)
        except asyncio.CancelledError:
            if await run and function == "pg_try_advisory_lock":
                await self._on_lock_session("pg_advisory_unlock", name)
            raise

    async def _on_lock_session(self, function: str, name: str) -> bool:
        async with self._lock_mutex:
            if not self._open:
                raise StoreUnavailable("the store is not open")
            lost = self._lock_session is None or self._lock_session.is_closed()
            if function == "pg_advisory_unlock" and lost:
                return False  # the session that held it is gone, and its locks with it
            try:
                if lost or self._lock_session is None:
                    self._lock_session = await self._connect()
                answer = await self._lock_session.fetchval(
                    f"SELECT {function}(hashtextextended($1, 0))", name
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # A lost session has lost its locks too (the server freed them): the next
                # statement opens a new one.
                if self._lock_session is not None:
                    self._lock_session.terminate()
                    self._lock_session = None
                if function == "pg_advisory_unlock":
                    return False
                raise self._unreachable(exc) from exc
            return bool(answer)

    async def take_rate_slot(
        self, name: str, per_minute: int, per_second: int, margin: float = 0.0
    ) -> float:
        """Grant one request under the windows ``name``: counted and granted in one
        transaction under the window's advisory lock, by the database's clock."""
        minute, second = 60.0 + margin, 1.0 + margin
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))", name)
            row = await conn.fetchrow(
                # One reading of the clock: clock_timestamp() moves during a statement.
                f"WITH clock AS (SELECT {_NOW} AS now) SELECT now,"
                " count(at) FILTER (WHERE at > now - $2), min(at) FILTER (WHERE at > now - $2),"
                " count(at) FILTER (WHERE at > now - $3), min(at) FILTER (WHERE at > now - $3)"
                " FROM clock LEFT JOIN rate_grants ON name = $1 AND at > now - $2 GROUP BY now",
                name,
                minute,
                second,
            )
            assert row is not None  # grouped by the one clock row
            now, in_minute, oldest_in_minute, in_second, oldest_in_second = row
            if in_minute >= per_minute:
                return max(float(oldest_in_minute + minute - now), 0.001)
            if in_second >= per_second:
                return max(float(oldest_in_second + second - now), 0.001)
            grant = await conn.fetchval(
                "INSERT INTO rate_grants (name, at) VALUES ($1, $2) RETURNING id", name, now
            )
            if grant % 100 == 0:
                await conn.execute("DELETE FROM rate_grants WHERE at < $1", now - RATE_GRANTS_KEPT)
        return 0.0

    async def publish(self, channel: str, payload: str) -> None:
        await self._db.execute("SELECT pg_notify($1, $2)", CHANNEL_PREFIX + channel, payload)

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for each message on ``channel``; after the listening
        connection was lost and made again, once with ``""`` (messages may have been missed)."""
        new = channel not in self._subscribers
        self._subscribers.setdefault(channel, []).append(callback)
        if new and self._listening is not None:
            self._listener_lost.set()  # listen again, this channel with the others

    async def _listen(self) -> asyncpg.Connection:
        """A connection listening on every subscribed channel."""
        conn = await self._connect()
        self._listened = set()
        try:
            for channel in list(self._subscribers):
                await conn.add_listener(CHANNEL_PREFIX + channel, self._notified)
                self._listened.add(channel)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(lambda _conn: self._listener_lost.set())
        return conn

    def _notified(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        self._deliver(channel.removeprefix(CHANNEL_PREFIX), str(payload))

    def _deliver(self, channel: str, payload: str) -> None:
        for callback in self._subscribers.get(channel, []):
            try:
                callback(payload)
            except Exception:
                log.exception("a subscriber of channel %r failed", channel)

    async def _keep_listening(self) -> None:
        """Prove the listening connection alive now and then; make it again when it is lost
        (or a channel was added), and tell every subscriber it may have missed messages."""
        failures = 0
        while True:
            try:
                async with asyncio.timeout(LISTEN_CHECK_SECONDS):
                    await self._listener_lost.wait()
            except TimeoutError:
                pass
            self._listener_lost.clear()
            conn = self._listener
            if not self._subscribers:
                continue
            if conn is not None and not conn.is_closed():
                try:
                    async with asyncio.timeout(LISTEN_CHECK_SECONDS):
                        await conn.fetchval("SELECT 1")
                        for channel in set(self._subscribers) - self._listened:
                            await conn.add_listener(CHANNEL_PREFIX + channel, self._notified)
                            self._listened.add(channel)
                    continue
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    conn.terminate()
            self._listener = None
            try:
                self._listener = await self._listen()
            except (StoreUnavailable, OSError, asyncpg.PostgresError) as exc:
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning("listening for other processes' messages failed: %s", exc)
                await asyncio.sleep(delay)
                self._listener_lost.set()
                continue
            failures = 0
            for channel in list(self._subscribers):
                self._deliver(channel, "")

    async def save_auth(self, result: StoredAuth) -> None:
        await self._db.execute(
            "INSERT INTO auth_results (integration, status, reason, checked_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (integration) DO UPDATE SET"
            " status = excluded.status, reason = excluded.reason,"
            " checked_at = excluded.checked_at",
            result.integration,
            result.status,
            result.reason,
            result.checked_at,
        )

    async def auth_results(self) -> dict[str, StoredAuth]:
        rows = await self._db.fetch(
            "SELECT integration, status, reason, checked_at FROM auth_results ORDER BY integration"
        )
        return {r[0]: StoredAuth(r[0], r[1], r[2], r[3]) for r in rows}


# The rows of a page of calls: $1 their accounts, $2 their call ids, pair by pair.
_PAGE = "(account, call_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
# An account's latest calls ($1 the account, $2 how many), their states as JSON.
_RECENT = (
    "recent AS (SELECT state::jsonb AS s FROM calls WHERE account = $1 ORDER BY seq DESC LIMIT $2)"
)


def _count(status: str) -> int:
    """The rows a statement touched, from its status (``UPDATE 1``, ``DELETE 0``)."""
    return int(status.rsplit(" ", 1)[-1])


class _Args:
    """The arguments of a statement being built, each named ``$n`` as it is added."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _call_filters(query: CallQuery) -> tuple[str, list[Any]]:
    """The WHERE clause over ``calls`` for ``query``, and its arguments."""
    arg = _Args()
    clauses = ["TRUE"]
    if query.since is not None:
        clauses.append(f"started_at >= {arg(query.since)}")
    if query.before is not None and query.before_call_id is not None:
        # The list's own order.
        clauses.append(
            f"(started_at, call_id) < ({arg(query.before)}, {arg(query.before_call_id)})"
        )
    elif query.before is not None:
        clauses.append(f"started_at < {arg(query.before)}")
    if query.account is not None:
        clauses.append(f"account = {arg(query.account)}")
    if query.call_id is not None:
        clauses.append(f"call_id = {arg(query.call_id)}")
    if query.numbers is not None:
        # The plain ANY lets the server use the number's index; the pairs keep each number to
        # the account in whose region it was read.
        numbers = [number for _, number in query.numbers]
        clauses.append(
            f"client_number = ANY({arg(numbers)}::text[]) AND (account, client_number) IN"
            f" (SELECT * FROM unnest({arg([a for a, _ in query.numbers])}::text[],"
            f" {arg(numbers)}::text[]))"
        )
    if query.number_digits is not None:
        clauses.append(f"strpos(client_number, {arg(query.number_digits)}) > 0")
    if query.extension is not None:
        clauses.append(f"strpos(extensions, {arg(f',{query.extension},')}) > 0")
    if query.outcome is not None:
        clauses.append(f"state::jsonb ->> 'outcome' = {arg(str(query.outcome))}")
    if query.status is not None or query.integration is not None:
        clauses.append(_status_filter(query.status, query.integration, arg))
    return " AND ".join(clauses), arg.values


def _status_filter(status: DeliveryStatus | None, integration: str | None, arg: _Args) -> str:
    """The calls where an integration (any, or ``integration``) stands at ``status``: as the
    SQLite store finds them (see ``sqlite._status_filter``)."""
    only = f" AND integration = {arg(integration)}" if integration is not None else ""
    if status is not None and status in ROWS_OF_STATUS:
        return (
            "(account, call_id) IN (SELECT account, call_id FROM dispatches"
            " WHERE (account, call_id, integration) IN (SELECT account, call_id, integration"
            f" FROM dispatches WHERE {ROWS_OF_STATUS[status]}{only})"
            f" GROUP BY account, call_id, integration HAVING {_STATUS_OF_GROUP} = "
            f"{arg(status.value)})"
        )
    having = f" GROUP BY integration HAVING {_STATUS_OF_GROUP} = 'done'" if status else ""
    return (
        "EXISTS (SELECT 1 FROM dispatches WHERE dispatches.account = calls.account"
        f" AND dispatches.call_id = calls.call_id{only}{having})"
    )


async def _group_rows(
    conn: _Conn | asyncpg.Pool, integration: str, account: str, call_id: str
) -> list[asyncpg.Record]:
    """A group's pending rows in order, each with its call's state as a last column."""
    # One statement, one snapshot: the state holds every event that made the rows. The
    # state's subquery does not depend on the row: PostgreSQL reads it once.
    found: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_DISPATCH_COLUMNS}, (SELECT state FROM calls"
        " WHERE account = $2 AND call_id = $3) FROM dispatches"
        " WHERE status = 'pending' AND integration = $1 AND account = $2"
        " AND call_id = $3 ORDER BY id",
        integration,
        account,
        call_id,
    )
    return found


async def _insert_records(
    conn: _Conn, account: str, call_id: str, records: Sequence[NewCallRecord]
) -> None:
    """Keep ``records`` with a call, in the caller's transaction: a routing record only when
    the decision changed; then the call's oldest hook calls beyond ``MAX_RECORDS_PER_CALL``
    are dropped."""
    added = 0
    for record in records:
        data = callrecords.encode(record.entry)
        kind = record.entry.kind
        if kind == "routing":
            last = await conn.fetchval(
                "SELECT data FROM call_records WHERE account = $1 AND call_id = $2"
                " AND integration = $3 AND kind = 'routing' ORDER BY id DESC LIMIT 1",
                account,
                call_id,
                record.integration,
            )
            if last == data:
                continue
        await conn.execute(
            "INSERT INTO call_records (account, call_id, integration, kind, at, data)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            account,
            call_id,
            record.integration,
            kind,
            record.at,
            data,
        )
        added += 1
    if not added:
        return
    count = await conn.fetchval(
        "SELECT count(*) FROM call_records WHERE account = $1 AND call_id = $2", account, call_id
    )
    if count > callrecords.MAX_RECORDS_PER_CALL:
        await conn.execute(
            "DELETE FROM call_records WHERE id IN (SELECT id FROM call_records"
            " WHERE account = $1 AND call_id = $2 AND kind != 'routing' ORDER BY id LIMIT $3)",
            account,
            call_id,
            count - callrecords.MAX_RECORDS_PER_CALL,
        )


def _dispatch(row: asyncpg.Record) -> Dispatch:
    """A dispatch row as read with ``_DISPATCH_COLUMNS``; its record is parsed once, here."""
    return Dispatch(
        id=row[0],
        account=row[1],
        call_id=row[2],
        integration=row[3],
        key=row[4],
        attempts=row[5],
        not_before=row[6],
        status=row[7],
        last_error=row[8],
        created_at=row[9],
        record=LifecycleEvent.model_validate_json(row[10]) if row[10] else None,
    )


async def inspect(url: str) -> StoreInfo:
    """Where the database is and its schema version, read without creating or migrating
    anything (``connector check``).

    :raises StoreUnavailable: it cannot be reached; the message is the driver's reason only
        (the caller names the URL), with the password masked.
    """
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc) or type(exc).__name__
        password = url_password(url)
        raise StoreUnavailable(reason.replace(password, "***") if password else reason) from exc
    try:
        version = await pg_migrations.version_of(conn)
    finally:
        await conn.close()
    return StoreInfo("postgresql", masked_url(url), version, pg_migrations.LATEST)
