"""Retention on each backend: what is older than its period goes, everything else stays, and
no phone number of a pruned call is left in any table of the database."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from connector_core import missed_calls, pruner, tracker
from connector_core.callrecords import Decision, HookCall, HookOutcome, NewCallRecord
from connector_core.clock import FakeClock
from connector_core.config import RetentionConfig
from connector_core.events import parse_event
from connector_core.missed import Rules
from connector_core.retention import DAY
from connector_core.simulator import scenarios
from connector_core.store.base import NewDispatch, Store
from connector_core.store.pruning import PRUNE_RULES
from tests.store_backends import StoreBackend

ACCOUNT = "012345"
INTEGRATION = f"{ACCOUNT}/usedesk"
OLD_NUMBER = "79161112233"  # the caller of the calls made 31 days ago
NEW_NUMBER = "79167778899"  # the caller of today's calls
SETTINGS = RetentionConfig(calls_days=30, inbox_days=7, batch_size=3, batch_pause_seconds=0)


@dataclass
class World:
    store: Store
    clock: FakeClock
    backend: StoreBackend


@pytest.fixture
async def world(store_backend: StoreBackend) -> AsyncIterator[World]:
    clock = FakeClock(1_800_000_000.0)
    store = store_backend.new(clock)
    await store.open()
    yield World(store, clock, store_backend)
    await store.close()


async def seed_call(
    world: World,
    call_id: str,
    number: str,
    *,
    events: int | None = None,
    complete: bool = True,
) -> None:
    """A call from ``number`` as the service stores it now: its webhooks (processed), state,
    hook rows (done unless not ``complete``), a hook record quoting the number, effect keys,
    a refused webhook and a quarantined one."""
    store, now = world.store, world.clock.now()
    call = scenarios.inbound_answered(
        call_id=call_id, client=number, start=int(now) - 300, seq=int(call_id.split(".")[1])
    )
    state = None
    for params in call.events[:events]:
        item = await store.append_event(ACCOUNT, params, now)
        state, new = tracker.apply(
            state, parse_event(params), account=ACCOUNT, region="RU", received_at=now
        )
        hook = HookCall(
            hook="connector_call_finished",
            record="finished",
            attempt=1,
            started_at=now,
            seconds=0.1,
            outcome=HookOutcome.DONE,
            decisions=(Decision(what="client found", text=f"call from +{number}"),),
        )
        dispatches = [NewDispatch(INTEGRATION, record) for record in new]
        await store.commit_event(
            item,
            state,
            dispatches,
            [NewCallRecord(INTEGRATION, hook, now)],
            number_call=missed_calls.noted(state, dispatches),
        )
    if state is not None and state.finished and state.client_number:
        # The missed-call lifecycle keeps the finished call's number until it is decided.
        lifecycle = missed_calls.MissedCalls(store, world.clock, Rules())
        await lifecycle.settle(ACCOUNT, state.client_number, now)
    if complete:
        for row in await store.dispatches_for(ACCOUNT, call_id):
            await store.complete_dispatch(row.id)
    effects = store.effects(INTEGRATION)
    await effects.put(f"phone:+{number}:client@{ACCOUNT}", {"id": 7, "phone": number})
    await effects.put(f"comment:{call_id}", {"text": f"call from +{number}"})
    await store.record_rejected(ACCOUNT, {"src_num": number}, "no call_id", now)
    poison = await store.append_event(ACCOUNT, {"call_id": call_id, "src_num": number}, now)
    await store.fail_event(poison, "bad event", quarantine=True)


async def prune_now(world: World) -> dict[str, int]:
    report = await pruner.prune(world.store, SETTINGS, world.clock.now())
    return dict(report.counts)


async def tables_holding(backend: StoreBackend, text: str) -> list[str]:
    """Every table.column of the database whose value contains ``text``."""
    found: list[str] = []
    if backend.name == "sqlite":
        db = sqlite3.connect(backend.where)
        try:
            tables = [
                r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            for table in tables:
                for column in [r[1] for r in db.execute(f"PRAGMA table_info({table})")]:
                    sql = f"SELECT count(*) FROM {table} WHERE instr(CAST({column} AS TEXT), ?)"
                    if db.execute(sql, (text,)).fetchone()[0]:
                        found.append(f"{table}.{column}")
        finally:
            db.close()
        return found
    conn = await asyncpg.connect(backend.where)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        )
        for table, column in columns:
            sql = f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE $1'
            if await conn.fetchval(sql, f"%{text}%"):
                found.append(f"{table}.{column}")
    finally:
        await conn.close()
    return found


async def test_old_rows_go_and_new_rows_stay(world: World) -> None:
    await seed_call(world, "1800000000.1", OLD_NUMBER)
    world.clock.advance(31 * DAY)
    await seed_call(world, "1802678400.2", NEW_NUMBER)
    new_before = await world.store.call_events(ACCOUNT, "1802678400.2")

    counts = await prune_now(world)

    assert await world.store.load_call(ACCOUNT, "1800000000.1") is None
    assert await world.store.call_events(ACCOUNT, "1800000000.1") == []
    assert await world.store.call_records(ACCOUNT, "1800000000.1") == []
    assert await world.store.dispatches_for(ACCOUNT, "1800000000.1") == []
    assert await world.store.load_call(ACCOUNT, "1802678400.2") is not None
    assert await world.store.call_events(ACCOUNT, "1802678400.2") == new_before
    assert len(await world.store.call_records(ACCOUNT, "1802678400.2")) == 4
    assert await world.store.effects(INTEGRATION).get("comment:1802678400.2") is not None
    assert await world.store.effects(INTEGRATION).get("comment:1800000000.1") is None
    # Every kind of row was pruned, in batches of 3 (the call's 4 webhooks took two).
    assert counts == {
        "inbox": 4,
        "inbox_quarantined": 1,
        "rejected": 1,
        "call_records": 4,
        "dispatches": counts["dispatches"],
        "effects": 2,
        "number_calls": 1,
        "calls": 1,
    }
    assert counts["dispatches"] >= 3
    assert list(counts) == [rule.name for rule in PRUNE_RULES]
    assert await prune_now(world) == dict.fromkeys(counts, 0)


async def test_no_table_holds_a_pruned_callers_number(world: World) -> None:
    await seed_call(world, "1800000000.1", OLD_NUMBER)
    world.clock.advance(31 * DAY)
    await seed_call(world, "1802678400.2", NEW_NUMBER)
    assert "calls.client_number" in await tables_holding(world.backend, OLD_NUMBER[1:])

    await prune_now(world)

    assert await tables_holding(world.backend, OLD_NUMBER[1:]) == []
    assert "calls.client_number" in await tables_holding(world.backend, NEW_NUMBER[1:])


async def test_processed_webhooks_go_after_the_shorter_inbox_period(world: World) -> None:
    await seed_call(world, "1800000000.1", OLD_NUMBER)
    world.clock.advance(8 * DAY)

    counts = await prune_now(world)

    left = await world.store.call_events(ACCOUNT, "1800000000.1")
    assert [event.status for event in left] == ["quarantined"]
    assert counts["inbox"] == 4 and counts["rejected"] == 1
    # The call, its records and the quarantined webhook wait for the calls period.
    assert await world.store.load_call(ACCOUNT, "1800000000.1") is not None
    assert len(await world.store.quarantined_events()) == 1
    assert counts["calls"] == counts["call_records"] == counts["inbox_quarantined"] == 0


async def test_a_call_in_progress_is_never_pruned_however_old(world: World) -> None:
    await seed_call(world, "1800000000.1", OLD_NUMBER, events=2)  # rung, answered: talking
    world.clock.advance(365 * DAY)

    counts = await prune_now(world)

    state = await world.store.load_call(ACCOUNT, "1800000000.1")
    assert state is not None and not state.finished
    assert len(await world.store.call_events(ACCOUNT, "1800000000.1")) == 3  # 2 + quarantined
    assert len(await world.store.call_records(ACCOUNT, "1800000000.1")) == 2
    assert await world.store.effects(INTEGRATION).get("comment:1800000000.1") is not None
    # Only what no call holds: the refused webhook, and the number's CRM link.
    assert {name for name, n in counts.items() if n} == {"rejected", "effects"}


async def test_a_finished_call_with_a_hook_call_pending_is_kept_until_it_is_done(
    world: World,
) -> None:
    await seed_call(world, "1800000000.1", OLD_NUMBER, complete=False)
    world.clock.advance(31 * DAY)

    await prune_now(world)

    rows = await world.store.dispatches_for(ACCOUNT, "1800000000.1")
    assert rows and all(row.status == "pending" for row in rows)
    assert await world.store.load_call(ACCOUNT, "1800000000.1") is not None
    assert len(await world.store.call_records(ACCOUNT, "1800000000.1")) == 4

    for row in rows:
        await world.store.complete_dispatch(row.id)
    await prune_now(world)

    assert await world.store.load_call(ACCOUNT, "1800000000.1") is None
    assert await world.store.dispatches_for(ACCOUNT, "1800000000.1") == []


async def test_a_pending_webhook_is_never_pruned(world: World) -> None:
    item = await world.store.append_event(ACCOUNT, {"call_id": "1.1"}, world.clock.now())
    world.clock.advance(365 * DAY)

    await prune_now(world)

    assert [e.id for e in await world.store.pending_events(10)] == [item]


async def test_a_dry_run_counts_and_deletes_nothing(world: World) -> None:
    await seed_call(world, "1800000000.1", OLD_NUMBER)
    world.clock.advance(31 * DAY)

    dry = await pruner.prune(world.store, SETTINGS, world.clock.now(), dry_run=True)

    assert await world.store.load_call(ACCOUNT, "1800000000.1") is not None
    assert dry.dry_run and dry.counts == await prune_now(world)
