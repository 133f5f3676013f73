"""The spool: an ingest process's webhooks in a file of their own, moved into the inbox by the
worker once each, whatever stops when (store/spool.py)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector_core.app import create_app
from connector_core.clock import FakeClock
from connector_core.cluster import Role
from connector_core.simulator import scenarios
from connector_core.store import spool
from connector_core.store.sqlite import SQLiteStore
from tests.harness import TOKEN, make_config


async def opened(path: Path, *, spools: bool) -> SQLiteStore:
    store = SQLiteStore(path, clock=FakeClock())
    store.spools = spools
    await store.open()
    return store


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore]]:
    """An ingest process's store and a worker process's, on one file."""
    worker = await opened(tmp_path / "c.db", spools=False)
    ingest = await opened(tmp_path / "c.db", spools=True)
    yield ingest, worker
    await ingest.close()
    await worker.close()


def inbox_rows(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT call_id, json_extract(params, '$.n') FROM inbox ORDER BY id"
        ).fetchall()
    finally:
        db.close()


async def append(store: SQLiteStore, n: int) -> int:
    return await store.append_event("012345", {"call_id": f"c{n}", "n": str(n)}, float(n))


async def test_an_ingest_process_appends_while_the_worker_holds_the_store_write_lock(
    pair: tuple[SQLiteStore, SQLiteStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reason for the spool: a webhook does not wait for the worker's transactions."""
    ingest, worker = pair
    monkeypatch.setattr("connector_core.store.sqlite_commit.BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a worker's long transaction on the store file
    try:
        ids = await asyncio.gather(*(append(ingest, n) for n in range(5)))
        assert await ingest.writable()  # /readyz proves the writes webhooks need
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(ids) == ids and len(set(ids)) == 5
    assert spool.path_beside(tmp_path / "c.db") == tmp_path / "c.spool.db"
    assert inbox_rows(tmp_path / "c.db") == []  # in the spool, not yet in the inbox
    assert (await ingest.stats())["inbox_pending"] == 5  # pending all the same
    assert (await worker.stats())["inbox_pending"] == 5


async def test_the_worker_moves_spooled_webhooks_into_the_inbox_in_order(
    pair: tuple[SQLiteStore, SQLiteStore], tmp_path: Path
) -> None:
    ingest, worker = pair
    event = scenarios.inbound_missed(call_id="1717171700.9").events[0]
    from connector_core.events import parse_event

    parsed = parse_event(event)
    await ingest.append_event("012345", event, 1.0, parsed)  # type: ignore[arg-type]
    for n in range(3):
        await append(ingest, n)

    items = await worker.pending_events(100)
    assert [item.params.get("n") for item in items] == [None, "0", "1", "2"]
    assert items[0].event == parsed  # what ingest parsed travels with the row
    assert items[0].params == event
    # Moved once: the spool is empty, and the next drain finds only what came since.
    assert (
        spool.pending(sqlite3.connect(tmp_path / "c.spool.db"), sqlite3.connect(tmp_path / "c.db"))
        == 0
    )
    await append(ingest, 3)
    items = await worker.pending_events(100)
    assert [item.params.get("n") for item in items] == [None, "0", "1", "2", "3"]
    assert len(inbox_rows(tmp_path / "c.db")) == 5
    spooled = sqlite3.connect(tmp_path / "c.spool.db")
    assert spooled.execute("SELECT count(*) FROM inbox").fetchone() == (0,)
    spooled.close()


async def test_a_move_interrupted_before_its_delete_moves_nothing_twice(
    pair: tuple[SQLiteStore, SQLiteStore], tmp_path: Path
) -> None:
    ingest, worker = pair
    for n in range(4):
        await append(ingest, n)
    # The worker stopped between the move's commit and the delete from the spool.
    assert worker._db is not None
    reader = sqlite3.connect(tmp_path / "c.spool.db")
    found = spool.read(reader, worker._db)
    assert found is not None and len(found.rows) == 4
    await worker._write(lambda db: spool.move(db, found))
    assert len(inbox_rows(tmp_path / "c.db")) == 4
    assert reader.execute("SELECT count(*) FROM inbox").fetchone() == (4,)

    await append(ingest, 4)
    items = await worker.pending_events(100)
    assert [item.params["n"] for item in items] == ["0", "1", "2", "3", "4"]
    assert reader.execute("SELECT count(*) FROM inbox").fetchone() == (0,)
    reader.close()


async def test_two_processes_moving_at_once_move_each_webhook_once(tmp_path: Path) -> None:
    ingest = await opened(tmp_path / "c.db", spools=True)
    movers = [await opened(tmp_path / "c.db", spools=False) for _ in range(2)]
    try:
        for round_ in range(5):
            await asyncio.gather(*(append(ingest, round_ * 20 + n) for n in range(20)))
            await asyncio.gather(*(m._move_spooled() for m in movers))
        await movers[0]._move_spooled()
        moved = [n for _, n in inbox_rows(tmp_path / "c.db")]
        assert sorted(moved, key=int) == [str(n) for n in range(100)]
    finally:
        for store in (ingest, *movers):
            await store.close()


async def test_a_spool_made_again_is_moved_from_its_own_start(tmp_path: Path) -> None:
    """A deleted spool's successor numbers its rows from 1 again: an older watermark must not
    hide them."""
    worker = await opened(tmp_path / "c.db", spools=False)
    try:
        ingest = await opened(tmp_path / "c.db", spools=True)
        for n in range(3):
            await append(ingest, n)
        await worker.pending_events(100)
        await ingest.close()
        await worker.close()
        for name in ("c.spool.db", "c.spool.db-wal", "c.spool.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)

        worker = await opened(tmp_path / "c.db", spools=False)
        ingest = await opened(tmp_path / "c.db", spools=True)
        await append(ingest, 3)
        await ingest.close()
        assert [n for _, n in inbox_rows(tmp_path / "c.db")] == ["0", "1", "2"]
        items = await worker.pending_events(100)  # the first three are pending still
        assert [item.params["n"] for item in items] == ["0", "1", "2", "3"]
    finally:
        await worker.close()


async def test_a_failed_move_is_logged_and_the_inbox_is_still_processed(
    pair: tuple[SQLiteStore, SQLiteStore], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest, worker = pair
    await worker.append_event("012345", {"call_id": "direct", "n": "d"}, 0.0)
    await append(ingest, 1)
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON inbox WHEN NEW.call_id = 'c1'"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    db.commit()
    with caplog.at_level(logging.ERROR, logger="connector_core.store.sqlite"):
        items = await worker.pending_events(100)
        await worker.pending_events(100)  # the same failure again: not logged again at once
    assert [item.params["n"] for item in items] == ["d"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "webhooks in the spool could not be moved into the inbox (SpoolError: a spooled"
        " webhook cannot be put in the inbox: refused by the test); they stay there and the"
        " worker tries again at its next drain"
    ]
    assert (await worker.stats())["inbox_pending"] == 2  # the spooled one still counts
    # How long the moves have failed, for /readyz and /metrics: from the first failure.
    assert (await worker.stats())["spool_failing_seconds"] == 1
    assert isinstance(worker.clock, FakeClock)
    worker.clock.advance(300)
    await worker.pending_events(100)
    assert (await worker.stats())["spool_failing_seconds"] == 300

    db.execute("DROP TRIGGER refuse")
    db.commit()
    db.close()
    items = await worker.pending_events(100)
    assert [item.params["n"] for item in items] == ["d", "1"]
    assert (await worker.stats())["spool_failing_seconds"] == 0


async def test_a_batch_of_spooled_webhooks_is_one_statement(
    pair: tuple[SQLiteStore, SQLiteStore],
) -> None:
    """Each statement is a wait for the GIL while the batch holds the spool's lock: a batch is
    one INSERT that SQLite begins and commits itself; no savepoint, no switching of SQLite's
    lock wait on and off (nothing reads through the spool's connection)."""
    ingest, _ = pair
    assert ingest._spool is not None and ingest._spool._db is not None
    statements: list[str] = []
    ingest._spool._db.set_trace_callback(statements.append)
    ids = await asyncio.gather(*(append(ingest, n) for n in range(10)))
    assert all(s.startswith("INSERT INTO inbox") for s in statements)
    assert len(statements) < 10  # group-committed: several webhooks to a statement
    assert sorted(ids) == ids and len(set(ids)) == 10
    reader = sqlite3.connect(spool.path_beside(ingest.path))
    try:
        stored = reader.execute("SELECT id, json_extract(params, '$.n') FROM inbox").fetchall()
    finally:
        reader.close()
    assert stored == [(item_id, str(n)) for n, item_id in enumerate(ids)]


async def test_a_spooled_webhook_waits_for_the_movers_lock(
    pair: tuple[SQLiteStore, SQLiteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's delete of moved rows holds the spool's write lock for a moment: a webhook
    coming then waits for it (in short pauses), and fails only once it is held too long."""
    ingest, _ = pair
    monkeypatch.setattr("connector_core.store.sqlite_commit.BUSY_TIMEOUT_MS", 300)
    holder = sqlite3.connect(spool.path_beside(ingest.path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiting = asyncio.ensure_future(append(ingest, 1))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # still waiting for the lock
        holder.execute("COMMIT")
        assert await waiting > 0
        holder.execute("BEGIN IMMEDIATE")  # now held past the wait
        assert ingest._spool is not None and ingest._spool._db is not None
        statements: list[str] = []
        ingest._spool._db.set_trace_callback(statements.append)
        failed = await asyncio.gather(
            *(append(ingest, n) for n in range(3)), return_exceptions=True
        )
        assert [str(e) for e in failed] == ["database is locked"] * 3
        # The file's fault, not a row's: a batch (the first append goes alone, the two
        # queued behind it together) is not tried again row by row, each waiting as long.
        with_c1 = [s for s in statements if "'c1'" in s]
        assert with_c1 and all("'c2'" in s for s in with_c1)
    finally:
        holder.close()


async def test_a_spooled_webhook_at_fault_fails_alone(
    pair: tuple[SQLiteStore, SQLiteStore],
) -> None:
    """One statement for the batch: when it fails, SQLite undoes it whole, and its rows are
    inserted again one by one, so only the row at fault fails."""
    ingest, _ = pair
    db = sqlite3.connect(spool.path_beside(ingest.path))
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON inbox WHEN NEW.call_id = 'c3'"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    db.commit()
    try:
        results = await asyncio.gather(
            *(append(ingest, n) for n in range(6)), return_exceptions=True
        )
        assert [type(r) for r in results] == [int] * 3 + [sqlite3.IntegrityError] + [int] * 2
        assert str(results[3]) == "refused by the test"
        rows = db.execute("SELECT call_id FROM inbox ORDER BY id").fetchall()
        assert rows == [("c0",), ("c1",), ("c2",), ("c4",), ("c5",)]
    finally:
        db.close()


async def test_a_spool_file_without_its_tables_yet_is_left_alone(tmp_path: Path) -> None:
    """An ingest process makes the file, then its tables: a worker looking in between sees
    nothing to move, and /readyz's counts work."""
    worker = await opened(tmp_path / "c.db", spools=False)
    try:
        sqlite3.connect(tmp_path / "c.spool.db").close()  # made, no tables yet
        assert await worker.pending_events(100) == []
        assert (await worker.stats())["inbox_pending"] == 0
        ingest = await opened(tmp_path / "c.db", spools=True)
        await append(ingest, 1)
        await ingest.close()
        assert [item.params["n"] for item in await worker.pending_events(100)] == ["1"]
    finally:
        await worker.close()


async def test_a_spool_whose_ids_went_back_is_moved_again_and_loses_nothing(
    pair: tuple[SQLiteStore, SQLiteStore], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older copy of the spool put back, or its -wal file lost: new rows get ids the
    watermark already passed. They must not be taken for moved ones (and deleted)."""
    ingest, worker = pair
    for n in range(3):
        await append(ingest, n)
    await worker.pending_events(100)
    back = sqlite3.connect(tmp_path / "c.spool.db", isolation_level=None)
    back.execute("UPDATE sqlite_sequence SET seq = 0 WHERE name = 'inbox'")  # as if put back
    back.close()
    for n in (3, 4):
        await append(ingest, n)  # spool ids 1 and 2 again

    with caplog.at_level(logging.ERROR, logger="connector_core.store.sqlite"):
        await worker.pending_events(100)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "webhooks in the spool could not be moved into the inbox (SpoolReset: the spool's ids"
        " end at 2, below the 3 already moved from it (a copy put back, or its -wal file"
        " lost): all its rows are moved again, once more for those moved before); they stay"
        " there and the worker tries again at its next drain"
    ]
    items = await worker.pending_events(100)
    assert [item.params["n"] for item in items] == ["0", "1", "2", "3", "4"]


async def test_a_spool_replaced_while_the_worker_runs_is_read_from_the_new_file(
    tmp_path: Path,
) -> None:
    worker = await opened(tmp_path / "c.db", spools=False)
    first = await opened(tmp_path / "c.db", spools=True)
    try:
        await append(first, 0)
        await worker.pending_events(100)  # the worker reads the first file
        for name in ("c.spool.db", "c.spool.db-wal", "c.spool.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        # The ingest process still writing to the deleted file says so on /readyz.
        assert await first.writable() is False
        second = await opened(tmp_path / "c.db", spools=True)
        await append(second, 1)
        await second.close()
        items = await worker.pending_events(100)
        assert [item.params["n"] for item in items] == ["0", "1"]
    finally:
        await first.close()
        await worker.close()


async def test_a_spool_that_is_not_a_database_does_not_stop_the_inbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await opened(tmp_path / "c.db", spools=False)
    try:
        await worker.append_event("012345", {"call_id": "direct", "n": "d"}, 0.0)
        (tmp_path / "c.spool.db").write_bytes(b"not a database, " * 512)
        with caplog.at_level(logging.ERROR, logger="connector_core.store.sqlite"):
            items = await worker.pending_events(100)
        assert [item.params["n"] for item in items] == ["d"]
        assert (await worker.stats())["inbox_pending"] == 1
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
            "webhooks in the spool could not be moved into the inbox (DatabaseError: file is"
            " not a database); they stay there and the worker tries again at its next drain"
        ]
    finally:
        await worker.close()


async def test_more_than_one_move_of_webhooks_keeps_their_order(
    pair: tuple[SQLiteStore, SQLiteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest, worker = pair
    monkeypatch.setattr(spool, "MOVE_BATCH", 3)
    for n in range(8):
        await append(ingest, n)
    for moved in (3, 6, 8):
        items = await worker.pending_events(100)
        assert [item.params["n"] for item in items] == [str(n) for n in range(moved)]


async def test_a_faulty_store_fails_moves_like_other_writes(tmp_path: Path) -> None:
    """The test tool that injects store faults (testing/faults.py) sees a move as a write of
    ``_move_spooled``: a move that fails leaves the webhooks in the spool, for the next one."""
    from connector_core.testing.faults import FaultyStore

    ingest = await opened(tmp_path / "c.db", spools=True)
    worker = FaultyStore(tmp_path / "c.db", clock=FakeClock())
    await worker.open()
    try:
        await append(ingest, 0)
        worker.fail_writes(only={"_move_spooled"})
        assert await worker.pending_events(100) == []
        assert (await worker.stats())["inbox_pending"] == 1
        worker.heal()
        assert [item.params["n"] for item in await worker.pending_events(100)] == ["0"]
    finally:
        await ingest.close()
        await worker.close()


async def test_an_ingest_process_whose_spool_stays_locked_answers_503_then_keeps_the_resent_one(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook the spool cannot take is refused in words Sipuni's log shows, so Sipuni sends
    it again; once the spool takes writes again, the webhook sent again is kept once."""
    monkeypatch.setattr("connector_core.store.sqlite_commit.BUSY_TIMEOUT_MS", 200)
    config, host = make_config(tmp_path, "")
    client = await aiohttp_client(create_app(config, host=host, role=Role.INGEST))
    params = scenarios.inbound_missed(call_id="1717171700.7").events[0]
    holder = sqlite3.connect(spool.path_beside(config.storage.path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a process stuck with the spool's write lock
    try:
        response = await client.get(f"/sipuni/{TOKEN}", params=params)
        assert response.status == 503
        assert await response.json() == {
            "success": False,
            "error": "the event could not be stored; send it again later",
        }
        readyz = await client.get("/readyz")
        assert readyz.status == 503
        assert (await readyz.json())["problems"] == [
            "the store cannot write: a real write to it failed"
        ]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    response = await client.get(f"/sipuni/{TOKEN}", params=params)  # Sipuni sends it again
    assert response.status == 200 and await response.json() == {"success": True}
    assert (await client.get("/readyz")).status == 200
    db = sqlite3.connect(spool.path_beside(config.storage.path))
    try:
        kept = db.execute("SELECT call_id FROM inbox").fetchall()
    finally:
        db.close()
    assert kept == [("1717171700.7",)]
