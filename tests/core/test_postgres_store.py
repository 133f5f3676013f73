"""What only the PostgreSQL store has: its schema versions, a clear error when the server
cannot be reached, no password shown, and listening again after the connection drops."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncpg
import pytest

from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind
from connector_core.cluster import call_lease, dispatch_lease
from connector_core.store import pg_migrations
from connector_core.store.base import NewDispatch, StoreUnavailable, is_store_failure
from connector_core.store.migrations import SchemaError
from connector_core.store.postgres import PostgresStore
from connector_core.store.urls import masked_url

EVENTUALLY = 10.0  # a bound on waiting for what must happen (see test_store_coordination)


async def _version(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await pg_migrations.version_of(conn)
    finally:
        await conn.close()


async def _migrate(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await pg_migrations.migrate(conn)
    finally:
        await conn.close()


# -- schema versions ----------------------------------------------------------------------------


def test_steps_are_numbered_one_after_another() -> None:
    versions = [s.version for s in pg_migrations.STEPS]
    assert versions == list(range(1, len(pg_migrations.STEPS) + 1))


async def test_a_database_left_at_the_first_step_opens_migrated_and_works(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:  # what a release whose last step was 1 left
        m.setattr(pg_migrations, "STEPS", pg_migrations.STEPS[:1])
        m.setattr(pg_migrations, "LATEST", 1)
        await _migrate(pg_url)
        conn = await asyncpg.connect(pg_url)  # a webhook as that release stored it
        item = await conn.fetchval(
            "INSERT INTO inbox (account, call_id, received_at, params)"
            """ VALUES ('012345', 'old.1', 1.0, '{"call_id": "old.1"}') RETURNING id"""
        )
        await conn.close()
    assert await _version(pg_url) == 1

    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert [(i.id, i.event) for i in await store.pending_events(10)] == [(item, None)]
        state = CallState(account="012345", call_id="old.1", last_received_at=1.0)
        started = LifecycleEvent(kind=LifecycleKind.STARTED, id="started")
        await store.commit_event(item, state, [NewDispatch("012345/usedesk", started)])
        assert await store.pending_events(10) == []
        assert await store.load_call("012345", "old.1") == state
        [row] = await store.dispatches_for("012345", "old.1")
        assert row.record == started
        # and the coordination tables of step 2 are there
        assert await store.take_leases(["call:old.1"], "worker", 30.0) == {"call:old.1"}
    finally:
        await store.close()
    assert await _version(pg_url) == pg_migrations.LATEST


async def test_each_step_runs_once_even_when_processes_start_together(pg_url: str) -> None:
    # Step 1 creates its tables without IF NOT EXISTS: a step run twice would fail.
    befores = await asyncio.gather(*(_migrate(pg_url) for _ in range(4)))
    assert befores.count(0) == 1  # the others waited for the lock, then found steps done
    assert await _migrate(pg_url) == pg_migrations.LATEST


async def test_a_database_from_a_newer_release_is_refused_with_a_reason(pg_url: str) -> None:
    await _migrate(pg_url)
    conn = await asyncpg.connect(pg_url)
    await conn.execute("UPDATE schema_version SET version = $1", pg_migrations.LATEST + 1)
    await conn.close()
    store = PostgresStore(pg_url)
    with pytest.raises(SchemaError, match=r"newer release of connector.*upgrade connector"):
        await store.open()
    await store.close()


async def test_info_names_the_database_and_its_version_without_the_password(
    pg_url: str,
) -> None:
    # The test cluster trusts every local user: the password is only carried, never checked.
    url = pg_url.replace("postgres@", "postgres:s3cret@")
    store = PostgresStore(url)
    await store.open()
    try:
        info = await store.info()
    finally:
        await store.close()
    assert info.backend == "postgresql"
    assert (info.version, info.latest) == (pg_migrations.LATEST, pg_migrations.LATEST)
    assert "s3cret" not in info.where and "postgres:***@127.0.0.1" in info.where


def test_masked_url_hides_the_password_wherever_it_is() -> None:
    assert masked_url("postgresql://u:pw@db:5432/c") == "postgresql://u:***@db:5432/c"
    assert masked_url("postgresql://u@db/c?password=pw&sslmode=require") == (
        "postgresql://u@db/c?password=***&sslmode=require"
    )
    assert masked_url("postgresql://db/c") == "postgresql://db/c"


# -- an unreachable server ----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens there once the socket is closed


async def test_a_server_nobody_runs_is_named_with_its_host_and_port() -> None:
    port = _closed_port()
    store = PostgresStore(f"postgresql://connector:s3cret@127.0.0.1:{port}/connector")
    with pytest.raises(StoreUnavailable) as raised:
        await store.open()
    message = str(raised.value)
    assert f"cannot use PostgreSQL at 127.0.0.1:{port}" in message
    assert "check that the server runs there" in message
    assert "s3cret" not in message
    assert is_store_failure(raised.value)


async def test_connection_failures_count_as_the_store_failing() -> None:
    assert is_store_failure(ConnectionRefusedError())
    assert is_store_failure(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert is_store_failure(asyncpg.exceptions.DiskFullError("could not extend file"))
    assert not is_store_failure(asyncpg.exceptions.NotNullViolationError("null value"))


# -- listening again ----------------------------------------------------------------------------


async def test_subscribers_hear_again_after_the_connection_drops_and_are_told(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url)
    heard: list[str] = []
    news = asyncio.Event()

    def hear(payload: str) -> None:
        heard.append(payload)
        news.set()

    store.subscribe("inbox", hear)
    await store.open()
    admin: Any = await asyncpg.connect(pg_url)
    try:
        # The server ends the listening session (a restart, a failover, a network cut).
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
        )
        async with asyncio.timeout(EVENTUALLY):
            await news.wait()
        assert heard == [""]  # maybe missed something: look at the inbox now
        news.clear()
        await store.publish("inbox", "1")
        async with asyncio.timeout(EVENTUALLY):
            await news.wait()
        assert heard == ["", "1"]
    finally:
        await admin.close()
        await store.close()


# -- several workers: each is handed work it can take --------------------------------------------

OTHER = "other-host:4242:beef"  # a lease holder in another process
X = "012345/x"


async def test_pending_events_leave_out_calls_another_process_holds(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        held = [await store.append_event("012345", {"call_id": "held.1"}, 1.0) for _ in range(3)]
        free = await store.append_event("012345", {"call_id": "free.1"}, 2.0)
        alone = await store.append_event("012345", {"event": "1"}, 3.0)  # no call id: by its id
        await store.take_leases([call_lease("012345", "held.1")], OTHER, 60)
        await store.take_leases([call_lease("012345", f"#{alone}")], OTHER, 60)

        # The oldest items are the held call's: a second worker gets the next call instead.
        assert [i.id for i in await store.pending_events(1)] == [free]

        await store.release_leases(OTHER)
        assert [i.id for i in await store.pending_events(10)] == [*held, free, alone]
    finally:
        await store.close()


async def test_due_heads_leave_out_groups_another_process_holds(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        record = LifecycleEvent(kind=LifecycleKind.STARTED, id="started")
        for call_id in ("c1", "c2"):
            state = CallState(account="012345", call_id=call_id)
            await store.commit_event(None, state, [NewDispatch(X, record)])
        await store.take_leases([dispatch_lease(X, "012345", "c1")], OTHER, 60)

        assert [h.call_id for h in await store.due_heads(X, now=10.0, limit=1)] == ["c2"]

        await store.release_leases(OTHER)
        assert [h.call_id for h in await store.due_heads(X, now=10.0, limit=10)] == ["c1", "c2"]
    finally:
        await store.close()
