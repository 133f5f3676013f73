"""The worker sends the store only the dispatch rows it has not committed for the call yet:
every row still stored once, none proposed twice, and a call routed afresh (a replay, a call
the store no longer has) proposes them all again."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from connector_core.appkeys import STORE, WORKER
from connector_core.callstate import LifecycleEvent, LifecycleKind
from connector_core.simulator import scenarios
from connector_core.store.base import NewDispatch
from connector_core.stored_rows import StoredRows
from tests.harness import ACCOUNT, TOKEN, app_for, make_config

RECORDER = '[accounts.012345.integrations.rec]\nplugin = "recorder"\n'


def _row(key: str, integration: str = "012345/rec") -> NewDispatch:
    return NewDispatch(integration, LifecycleEvent(kind=LifecycleKind.STARTED, id=key))


async def _service(tmp_path: Path, aiohttp_client) -> tuple[Any, Any, list[list[str]]]:
    config, host = make_config(tmp_path, RECORDER)
    app = app_for(config, host)
    client = await aiohttp_client(app)
    store = app[STORE]
    proposed: list[list[str]] = []
    commit = store.commit_event

    async def counting(item_id, state, dispatches, *args: Any, **kwargs: Any) -> None:
        proposed.append([d.key for d in dispatches])
        await commit(item_id, state, dispatches, *args, **kwargs)

    store.commit_event = counting
    return app, client, proposed


async def test_each_row_is_proposed_to_the_store_once(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    app, client, proposed = await _service(tmp_path, aiohttp_client)
    call = scenarios.inbound_answered(call_id="1717171700.1")
    for params in call.events:
        assert (await (await client.get(f"/sipuni/{TOKEN}", params=params)).json())["success"]
        await app[WORKER].drain()  # one event at a time: each commit on its own

    stored = [d.key for d in await app[STORE].dispatches_for(ACCOUNT, call.call_id)]
    sent = [key for keys in proposed for key in keys]
    assert len(proposed) == len(call.events)
    assert sorted(sent) == sorted(stored)  # each row once, and every row stored
    assert len(stored) >= 3 and any(keys == [] for keys in proposed)

    proposed.clear()
    items = await app[STORE].call_events(ACCOUNT, call.call_id)
    await app[WORKER].replay(items)
    assert sorted(proposed[0]) == sorted(stored)  # routed afresh: all proposed again


async def test_a_call_the_store_no_longer_has_starts_with_no_rows_known(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    app, client, proposed = await _service(tmp_path, aiohttp_client)
    worker = app[WORKER]
    call = scenarios.inbound_answered(call_id="1717171700.1")
    first, rest = call.events[0], call.events[1:]
    assert (await (await client.get(f"/sipuni/{TOKEN}", params=first)).json())["success"]
    await worker.drain()
    assert proposed[-1]  # its first rows
    # This process knew of more rows; then the call and its rows left the store (pruned).
    worker.stored_rows.stored((ACCOUNT, call.call_id), [_row("answered"), _row("finished")])
    db = sqlite3.connect(tmp_path / "connector.db")
    with db:
        db.execute("DELETE FROM dispatches WHERE call_id = ?", (call.call_id,))
        db.execute("DELETE FROM calls WHERE call_id = ?", (call.call_id,))
    db.close()

    for params in rest:
        assert (await (await client.get(f"/sipuni/{TOKEN}", params=params)).json())["success"]
    await worker.drain()

    stored = {d.key for d in await app[STORE].dispatches_for(ACCOUNT, call.call_id)}
    assert "finished" in stored


def test_the_latest_calls_are_remembered_within_the_bound() -> None:
    rows = StoredRows(max_calls=2)
    rows.stored(("a", "1"), [_row("started")])
    rows.stored(("a", "2"), [_row("started")])
    rows.stored(("a", "1"), [_row("answered")])  # the latest again
    rows.stored(("a", "3"), [_row("started")])  # past the bound: the oldest, call 2, goes
    proposed = [_row("started"), _row("answered"), _row("finished")]
    assert [d.key for d in rows.new(("a", "1"), proposed)] == ["finished"]
    assert [d.key for d in rows.new(("a", "2"), proposed)] == ["started", "answered", "finished"]
    assert [d.key for d in rows.new(("a", "3"), [_row("started", "a/other")])] == ["started"]
    rows.forget(("a", "1"))
    assert rows.new(("a", "1"), proposed) == proposed
