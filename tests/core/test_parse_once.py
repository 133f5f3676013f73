"""A webhook is parsed once: ingest stores the event it validated, the worker reads that back.

Inbox rows stored before the inbox kept the event (by the previous release, or by a tool that
fills the inbox directly) have none: the worker parses their fields as before, and they make
the same calls. The worker also loads a call's state once per chain of its events, not once
per event. Each test runs on both store backends, over real HTTP on a loopback port.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connector_core import worker as worker_module
from connector_core.appkeys import CLOCK, STORE, WORKER
from connector_core.callstate import CallState
from connector_core.events import ParsedRequest, SipuniEvent, parse_event
from connector_core.simulator import scenarios
from connector_core.store import migrations
from connector_core.store.sqlite import SQLiteStore
from tests.core.test_tracker import summary
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, seen, settle
from tests.store_backends import StoreBackend

pytestmark = pytest.mark.usefixtures("on_store_backend")

RECORDER = """
[accounts.012345.integrations.rec]
plugin = "recorder"
"""
CALL = scenarios.inbound_transferred("101", "102", call_id="1717171700.70001")
HOOKS = ["started", "answered", "transferred", "finished"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing a test does may write into the repo


@pytest.fixture
def worker_parses(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The parameters the worker hands to ``parse_event``, one entry per call of it."""
    calls: list[dict[str, Any]] = []
    real: Callable[..., ParsedRequest] = parse_event

    def counted(params: dict[str, Any]) -> ParsedRequest:
        calls.append(dict(params))
        return real(params)

    monkeypatch.setattr(worker_module, "parse_event", counted)
    return calls


@pytest.fixture
async def service(tmp_path: Path, test_plugins_dir: Path, aiohttp_client):
    config, host = make_config(tmp_path, RECORDER)
    app = app_for(config, host)
    return app, await aiohttp_client(app)


def assert_is_the_call(state: CallState | None) -> None:
    assert state is not None
    expected = {k: v for k, v in CALL.expected.items() if k != "lifecycle"}
    assert {k: v for k, v in summary(state, []).items() if k != "lifecycle"} == expected


async def hooks_run(app: web.Application) -> list[str]:
    """The lifecycle hooks the recorder saw run for the call, in order."""
    return [key.split(":")[2] for key in await seen(app, "rec")]


async def test_the_worker_does_not_parse_what_ingest_parsed(service, worker_parses) -> None:
    app, client = service
    for params in CALL.events:
        response = await client.get(f"/sipuni/{TOKEN}", params=params)
        assert response.status == 200
    pending = await app[STORE].pending_events(100)
    assert [item.event for item in pending] == [parse_event(p) for p in CALL.events]

    await settle(app)
    assert worker_parses == []
    assert_is_the_call(await app[STORE].load_call(ACCOUNT, CALL.call_id))
    assert await hooks_run(app) == HOOKS


async def test_rows_stored_without_the_event_are_parsed_and_make_the_same_call(
    service, worker_parses
) -> None:
    app, _ = service
    for params in CALL.events:  # as the previous release's ingest stored them
        await app[STORE].append_event(ACCOUNT, dict(params), app[CLOCK].now())
    assert [item.event for item in await app[STORE].pending_events(100)] == [None] * len(
        CALL.events
    )

    await settle(app)
    assert worker_parses == [dict(p) for p in CALL.events]
    assert_is_the_call(await app[STORE].load_call(ACCOUNT, CALL.call_id))
    assert await hooks_run(app) == HOOKS


async def test_a_call_is_loaded_once_for_all_its_pending_events(
    service, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = service
    store = app[STORE]
    reads: list[object] = []
    load_call, load_calls = store.load_call, store.load_calls

    async def one(account: str, call_id: str) -> CallState | None:
        reads.append(call_id)
        return await load_call(account, call_id)

    async def several(keys: list[tuple[str, str]]) -> dict[tuple[str, str], CallState]:
        reads.append(list(keys))
        return await load_calls(keys)

    for params in CALL.events:
        assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
    with monkeypatch.context() as m:
        m.setattr(store, "load_call", one)
        m.setattr(store, "load_calls", several)
        assert await app[WORKER].drain() == len(CALL.events)
    # One drain took every event of the call: one read, then each commit's state is reused.
    assert reads == [[(ACCOUNT, CALL.call_id)]]
    assert_is_the_call(await store.load_call(ACCOUNT, CALL.call_id))
    await settle(app)
    assert await hooks_run(app) == HOOKS


@pytest.mark.sqlite_only("a database file left by the previous release's schema")
async def test_an_inbox_row_of_the_previous_schema_is_processed_after_the_upgrade(
    tmp_path: Path, test_plugins_dir: Path, monkeypatch: pytest.MonkeyPatch, worker_parses
) -> None:
    path = tmp_path / "connector.db"
    db = sqlite3.connect(path, isolation_level=None)
    with monkeypatch.context() as m:  # the schema before the inbox kept the event
        m.setattr(migrations, "STEPS", [s for s in migrations.STEPS if s.version < 6])
        migrations.migrate(db)
    ring = CALL.events[0]
    db.execute(
        "INSERT INTO inbox (account, call_id, received_at, params) VALUES (?, ?, ?, ?)",
        (ACCOUNT, CALL.call_id, 1.0, json.dumps(ring)),
    )
    db.close()

    config, host = make_config(tmp_path, RECORDER)
    app = app_for(config, host)
    await _run(app)
    assert worker_parses == [ring]
    state = await _load(path)
    assert state is not None and [e.event for e in state.events] == [1]


async def _run(app: web.Application) -> None:
    runner = web.AppRunner(app)
    await runner.setup()  # opens the store (migrating it) and starts nothing in background
    try:
        await settle(app)
    finally:
        await runner.cleanup()


async def _load(path: Path) -> CallState | None:
    store = SQLiteStore(path)
    await store.open()
    try:
        return await store.load_call(ACCOUNT, CALL.call_id)
    finally:
        await store.close()


async def test_the_store_keeps_the_event_beside_the_fields(store_backend: StoreBackend) -> None:
    event = parse_event(CALL.events[0])
    assert isinstance(event, SipuniEvent)
    async with store_backend.opened() as store:
        with_event = await store.append_event(ACCOUNT, dict(CALL.events[0]), 1.0, event)
        without = await store.append_event(ACCOUNT, dict(CALL.events[1]), 2.0)
        items = {item.id: item for item in await store.pending_events(10)}
    assert items[with_event].event == event and items[with_event].params == CALL.events[0]
    assert items[without].event is None and items[without].params == CALL.events[1]
