"""Group commit in the SQLite store: batched writes keep every write's own result."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from connector_core.callstate import CallState, LifecycleKind
from connector_core.clock import FakeClock
from connector_core.simulator import scenarios
from connector_core.store.sqlite import SQLiteStore
from connector_core.store.sqlite_commit import ROWS_PER_INSERT
from tests.core.test_store import proposed, without_key
from tests.harness import TOKEN, app_for, make_config


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "c.db", clock=FakeClock())
    await s.open()
    yield s
    await s.close()


async def test_concurrent_appends_share_commits_and_each_gets_its_own_id(
    store: SQLiteStore, tmp_path: Path
) -> None:
    commits = 0
    real = store._db
    assert real is not None

    def count(sql: str) -> None:
        nonlocal commits
        commits += sql == "COMMIT"

    real.set_trace_callback(count)
    ids = await asyncio.gather(
        *(store.append_event("012345", {"event": "1", "n": str(i)}, float(i)) for i in range(200))
    )
    assert commits < 200  # appends that waited together were committed together
    # Every acknowledged row is on disk, readable by another connection, and the id each
    # append got back is that of its own row, not of another write in the same batch.
    other = sqlite3.connect(tmp_path / "c.db")
    rows = dict(other.execute("SELECT id, json_extract(params, '$.n') FROM inbox").fetchall())
    other.close()
    assert len(rows) == 200
    assert [rows[i] for i in ids] == [str(i) for i in range(200)]


async def test_the_webhooks_of_a_batch_are_inserted_by_one_statement(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """Each SQLite call gives up the GIL and waits to get it back from a busy event loop while
    the transaction holds the write lock: a batch's webhooks go in together, not one by one."""
    inserts: list[str] = []
    assert store._db is not None
    store._db.set_trace_callback(
        lambda sql: inserts.append(sql) if sql.startswith("INSERT INTO inbox") else None
    )
    count = 2 * ROWS_PER_INSERT + 5  # more than one statement holds
    ids = await asyncio.gather(
        *(store.append_event("012345", {"n": str(i)}, float(i)) for i in range(count))
    )
    # The first append goes alone (nothing to wait for); the rest queued behind it.
    assert len(inserts) <= 1 + -(-(count - 1) // ROWS_PER_INSERT)
    other = sqlite3.connect(tmp_path / "c.db")
    rows = dict(other.execute("SELECT id, json_extract(params, '$.n') FROM inbox").fetchall())
    other.close()
    assert [rows[i] for i in ids] == [str(i) for i in range(count)]


async def test_a_failing_write_fails_alone_within_its_batch(store: SQLiteStore) -> None:
    good = CallState(account="012345", call_id="good")
    bad_state = CallState(account="012345", call_id="bad")
    bad = without_key()
    item = await store.append_event("012345", {"event": "1"}, 1.0)
    results = await asyncio.gather(
        store.commit_event(None, good, [proposed(LifecycleKind.STARTED)]),
        store.commit_event(item, bad_state, bad),
        store.effects("012345/x").put("k", {"v": 1}),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is True
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await store.load_call("012345", "good") is not None
    assert await store.load_call("012345", "bad") is None  # undone alone
    assert [p.id for p in await store.pending_events(10)] == [item]


async def test_a_batch_without_failures_runs_no_savepoint_and_one_that_fails_runs_again(
    store: SQLiteStore,
) -> None:
    """A savepoint per write is two statements more, each a wait for the GIL while the batch
    holds the write lock: the writes run without one, and only a batch where one fails is
    rolled back and run again, a savepoint around each, so the one at fault fails alone."""
    statements: list[str] = []
    assert store._db is not None
    store._db.set_trace_callback(statements.append)
    states = [CallState(account="012345", call_id=f"c{i}") for i in range(5)]
    await asyncio.gather(*(store.commit_event(None, s, []) for s in states))
    assert statements.count("COMMIT") < 5  # they shared commits
    assert "SAVEPOINT write" not in statements

    lead = asyncio.ensure_future(store.effects("012345/x").put("lead", {"v": 0}))
    await asyncio.sleep(0)  # the lead write is in flight: the next three share a batch
    statements.clear()
    results = await asyncio.gather(
        store.effects("012345/x").put("first", {"v": 1}),
        store.commit_event(None, CallState(account="012345", call_id="bad"), without_key()),
        store.effects("012345/x").put("second", {"v": 2}),
        return_exceptions=True,
    )
    assert await lead is True
    # put() answers False for a key already there: "first" ran twice, but was stored once.
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert "ROLLBACK TO batch" in statements and "SAVEPOINT write" in statements
    # Run again inside the same transaction: the write lock was never let go.
    since_first = statements[next(i for i, sql in enumerate(statements) if "'first'" in sql) :]
    assert sum("'first'" in sql for sql in since_first) == 2
    assert "BEGIN IMMEDIATE" not in since_first and "ROLLBACK" not in since_first
    # Each write that stood is stored once, though its batch ran twice.
    effects = store.effects("012345/x")
    assert await effects.get("first") == {"v": 1} and await effects.get("second") == {"v": 2}
    assert await store.load_call("012345", "bad") is None


async def test_an_append_that_fails_fails_alone_without_a_savepoint(
    store: SQLiteStore,
) -> None:
    # An append is one statement, written without a savepoint of its own: SQLite undoes
    # the failed statement alone, and the batch's other writes are committed.
    statements: list[str] = []
    assert store._db is not None
    store._db.set_trace_callback(statements.append)
    results = await asyncio.gather(
        store.append_event("012345", {"event": "1", "n": "0"}, 1.0),
        store.append_event(None, {"event": "1", "n": "1"}, 2.0),  # type: ignore[arg-type]
        store.append_event("012345", {"event": "1", "n": "2"}, 3.0),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert [p.params["n"] for p in await store.pending_events(10)] == ["0", "2"]
    assert "SAVEPOINT write" not in statements


async def test_a_lone_failing_append_fails_alone_beside_other_writes(store: SQLiteStore) -> None:
    """One webhook in its statement (a batch's only one, or the 101st) fails alone too."""
    lead = asyncio.ensure_future(store.effects("012345/x").put("lead", {"v": 0}))
    await asyncio.sleep(0)  # the lead write is in flight: the next three share a batch
    results = await asyncio.gather(
        store.append_event(None, {"event": "1"}, 1.0),  # type: ignore[arg-type]
        store.commit_event(None, CallState(account="012345", call_id="good"), []),
        store.effects("012345/x").put("k", {"v": 1}),
        return_exceptions=True,
    )
    assert await lead is True
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert results[1] is None and results[2] is True
    assert await store.load_call("012345", "good") is not None


async def test_close_waits_for_writes_in_flight(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "c.db")
    await s.open()
    writes = [
        asyncio.ensure_future(s.append_event("012345", {"n": str(i)}, 1.0)) for i in range(50)
    ]
    await asyncio.sleep(0)  # every write handed over: one transaction running, the rest queued
    assert s._committing is not None and s._writes
    await s.close()  # while those writes are still in flight
    unfinished = [i for i, w in enumerate(writes) if not w.done()]
    assert not unfinished, f"close() returned before writes {unfinished} were answered"
    ids = [w.result() for w in writes]  # each acknowledged write got its row, none failed
    assert len(set(ids)) == 50
    other = sqlite3.connect(tmp_path / "c.db")
    assert other.execute("SELECT count(*) FROM inbox").fetchone()[0] == 50
    other.close()


async def test_a_write_waits_for_the_lock_another_process_holds_then_lands(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """An ingest process and a worker process share the file: a write that finds the write
    lock taken waits for it (in short pauses) and lands once it is let go."""
    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the other process is inside a transaction
    append = asyncio.create_task(store.append_event("012345", {"event": "1"}, 1.0))
    await asyncio.sleep(0.05)
    assert not append.done()  # waiting for the lock, not failed
    other.execute("COMMIT")
    item = await asyncio.wait_for(append, 5)
    assert other.execute("SELECT count(*) FROM inbox WHERE id = ?", (item,)).fetchone() == (1,)
    other.close()


async def test_a_lock_held_past_the_timeout_fails_the_write_with_sqlites_message(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("connector_core.store.sqlite_commit.BUSY_TIMEOUT_MS", 100)
    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        await store.append_event("012345", {"event": "1"}, 1.0)
    other.execute("ROLLBACK")
    other.close()
    # The wait set the connection's own busy timeout back for its reads and writes.
    assert await store.append_event("012345", {"event": "1"}, 2.0) > 0
    assert store._db is not None
    assert store._db.execute("PRAGMA busy_timeout").fetchone() == (100,)


async def test_statement_journals_are_kept_in_memory(store: SQLiteStore) -> None:
    """Each write runs under a savepoint, whose journal holds every page it changes: on disk
    it was two thirds of the bytes written per event."""
    assert store._db is not None
    assert store._db.execute("PRAGMA temp_store").fetchone() == (2,)  # 2 = MEMORY


# Another process recovering the WAL after a crash: it holds the wal-index's WRITE, CKPT and
# RECOVER locks (bytes 120 to 122 of the -shm file, SQLite's unix layout) while the index's
# header is not valid yet, so a writer is told SQLITE_BUSY_RECOVERY rather than SQLITE_BUSY.
_RECOVERING = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"\0" * 136, 0)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 3, 120)
print("held", flush=True)
time.sleep(0.3)
"""


async def test_a_write_waits_while_another_process_recovers_the_wal(
    store: SQLiteStore, tmp_path: Path
) -> None:
    await store.append_event("012345", {"event": "1"}, 1.0)  # the -shm file exists
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RECOVERING, str(tmp_path / "c.db-shm"), stdout=PIPE
    )
    assert holder.stdout is not None
    assert await holder.stdout.readline() == b"held\n"
    item = await store.append_event("012345", {"event": "1"}, 2.0)  # waited, then landed
    await holder.wait()
    assert item > 1


async def test_each_write_transaction_is_timed_for_the_operator(store: SQLiteStore) -> None:
    seen: list[float] = []
    store.on_commit = seen.append
    await asyncio.gather(*(store.append_event("012345", {"n": str(i)}, 1.0) for i in range(5)))
    await store.effects("012345/x").put("k", {"v": 1})
    # One figure per transaction (the five webhooks shared at most two), none for reads.
    assert 2 <= len(seen) <= 3 and all(s >= 0 for s in seen)
    await store.pending_events(10)
    assert len(seen) <= 3


async def test_the_write_transactions_show_in_metrics(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    config, host = make_config(tmp_path, "")
    client = await aiohttp_client(app_for(config, host))
    params = scenarios.inbound_missed().events[0]
    assert (await (await client.get(f"/sipuni/{TOKEN}", params=params)).json())["success"]
    metrics = await (await client.get("/metrics")).text()
    (count,) = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("connector_store_write_seconds_count")
    ]
    assert count >= 1  # the webhook's transaction at least


async def test_a_transaction_left_open_by_a_failed_rollback_does_not_block_later_writes(
    store: SQLiteStore,
) -> None:
    # What a ROLLBACK that failed (an I/O error at the time) leaves behind: a transaction
    # still open on the store's connection, with a statement of the failed batch in it.
    assert store._db is not None
    store._db.execute("BEGIN IMMEDIATE")
    store._db.execute(
        "INSERT INTO effects (integration, key, value, created_at)"
        " VALUES ('012345/x', 'lost', '{}', 0)"
    )
    assert await store.effects("012345/x").put("k", {"v": 1}) is True
    assert await store.effects("012345/x").get("k") == {"v": 1}
    assert await store.effects("012345/x").get("lost") is None  # the failed batch's: undone


async def test_a_read_after_a_failed_rollback_does_not_see_the_failed_batch(
    store: SQLiteStore,
) -> None:
    assert store._db is not None
    store._db.execute("BEGIN IMMEDIATE")  # what a ROLLBACK that failed leaves open
    store._db.execute(
        "INSERT INTO effects (integration, key, value, created_at)"
        " VALUES ('012345/x', 'lost', '{}', 0)"
    )
    assert await store.effects("012345/x").get("lost") is None
    assert not store._db.in_transaction


async def test_a_call_made_while_the_store_closes_is_refused_as_unavailable(
    store: SQLiteStore,
) -> None:
    """Not sqlite's "closed database" (a programming error to the worker, which could count
    it against the webhook being processed): the store is unavailable, as when it is down."""
    from connector_core.store.base import StoreUnavailable

    closing = asyncio.ensure_future(store.close())
    outcomes: list[str] = []
    while not closing.done():
        try:
            await store.effects("012345/x").get("k")
            outcomes.append("read")
        except StoreUnavailable:
            outcomes.append("unavailable")
            await asyncio.sleep(0)  # refused at once: let the close go on
    await closing
    assert set(outcomes) <= {"read", "unavailable"}, outcomes
    assert "unavailable" in outcomes
