"""The store keeps what happened to each call: routing decisions, hook calls with their CRM
requests and decisions, bounded per call; it lists calls by start, number, extension,
outcome and integration status, and finds a call's webhooks. On each backend, but for the
SQLite database left by the release before call records."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from connector_core import callrecords, tracker
from connector_core.callrecords import (
    CrmRequest,
    Decision,
    HookCall,
    HookOutcome,
    NewCallRecord,
    Routing,
)
from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind
from connector_core.clock import FakeClock
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios as sc
from connector_core.store import migrations
from connector_core.store.base import CallQuery, DeliveryStatus, NewDispatch, Store
from connector_core.store.sqlite import SQLiteStore
from tests.store_backends import StoreBackend

ACCOUNT = "012345"
USEDESK, AMO = f"{ACCOUNT}/usedesk", f"{ACCOUNT}/amo"


@pytest.fixture
async def store(store_backend: StoreBackend):
    s = store_backend.new(clock=FakeClock())
    await s.open()
    yield s
    await s.close()


def routing(sees: bool, why: str) -> Routing:
    return Routing(sees=sees, scheme_filter=why)


def hook_call(attempt: int, *, outcome: HookOutcome = HookOutcome.DONE, **kw) -> HookCall:
    return HookCall(
        hook="connector_call_started",
        record="started",
        attempt=attempt,
        started_at=100.0 + attempt,
        seconds=0.5,
        outcome=outcome,
        **kw,
    )


async def stored_call(store: Store, scenario: sc.Scenario, dispatch_to=()) -> CallState:
    """Feed a scenario's webhooks through the inbox and the tracker, as the worker does."""
    state = None
    for params in scenario.events:
        item = await store.append_event(ACCOUNT, params, 1000.0)
        event = parse_event(params)
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account=ACCOUNT, region="RU", received_at=1000.0)
        await store.commit_event(
            item,
            state,
            [
                NewDispatch(key, LifecycleEvent(kind=LifecycleKind.STARTED, id="started"))
                for key in dispatch_to
            ],
        )
    assert state is not None
    return state


async def test_routing_is_kept_when_it_changes_and_only_then(store: Store) -> None:
    call = await stored_call(store, sc.inbound_answered(call_id="c1"))
    waits = routing(False, "waits for the transfer scheme")
    sees = routing(True, "moved into transfer scheme 000-2 (Продажи)")
    for entry in (waits, waits, sees, sees):
        await store.commit_event(None, call, [], [NewCallRecord(AMO, entry, 5.0)])
    records = await store.call_records(ACCOUNT, "c1")
    assert [r.entry for r in records] == [waits, sees]
    assert {r.integration for r in records} == {AMO}


async def test_a_hook_call_is_kept_with_the_row_it_ran(store: Store) -> None:
    call = await stored_call(store, sc.inbound_answered(call_id="c1"), [USEDESK])
    [row] = await store.dispatches_for(ACCOUNT, "c1")
    failed = hook_call(
        1,
        outcome=HookOutcome.RETRY,
        error="TransientError: Usedesk answered 500",
        retry_at=160.0,
        requests=(CrmRequest("create/ticket", "server_error", 0.2, 101.0, status=500),),
    )
    done = hook_call(
        2,
        requests=(CrmRequest("create/ticket", "ok", 0.1, 170.0, status=200),),
        decisions=(Decision("ticket 5001 created", "new caller", link="https://u/tickets/5001"),),
    )
    await store.fail_dispatch(
        row.id, "Usedesk answered 500", 160.0, [NewCallRecord(USEDESK, failed, 101.0)]
    )
    await store.complete_dispatch(row.id, [NewCallRecord(USEDESK, done, 170.0)])
    records = await store.call_records(ACCOUNT, call.call_id)
    assert [(r.integration, r.at, r.entry) for r in records] == [
        (USEDESK, 101.0, failed),
        (USEDESK, 170.0, done),
    ]
    [row] = await store.dispatches_for(ACCOUNT, "c1")
    assert (row.status, row.attempts) == ("done", 2)


async def test_records_per_call_are_bounded_and_routing_stays(store: Store) -> None:
    await store.add_call_records(ACCOUNT, "c1", [NewCallRecord(AMO, routing(True, "all"), 1.0)])
    limit = callrecords.MAX_RECORDS_PER_CALL
    for attempt in range(1, limit + 31):
        await store.add_call_records(
            ACCOUNT, "c1", [NewCallRecord(USEDESK, hook_call(attempt), float(attempt))]
        )
    await store.add_call_records(ACCOUNT, "c2", [NewCallRecord(USEDESK, hook_call(1), 1.0)])
    records = await store.call_records(ACCOUNT, "c1")
    assert len(records) == limit
    assert records[0].entry == routing(True, "all")
    attempts = [r.entry.attempt for r in records[1:] if isinstance(r.entry, HookCall)]
    assert attempts == list(range(32, limit + 31))  # the oldest attempts went first
    assert len(await store.call_records(ACCOUNT, "c2")) == 1  # another call is untouched


async def test_a_calls_webhooks_come_back_in_arrival_order(store: Store) -> None:
    one, two = sc.inbound_answered(call_id="c1"), sc.inbound_missed(call_id="c2")
    shuffled = [one.events[2], two.events[0], one.events[0], one.events[1], one.events[3]]
    ids = [await store.append_event(ACCOUNT, params, 10.0 + i) for i, params in enumerate(shuffled)]
    await store.append_event("999999", one.events[0], 20.0)  # another account's call c1
    events = await store.call_events(ACCOUNT, "c1")
    assert [e.id for e in events] == [ids[0], ids[2], ids[3], ids[4]]
    assert [e.params for e in events] == [shuffled[0], *shuffled[2:]]


async def test_calls_are_listed_newest_first_and_filtered(store: Store) -> None:
    answered = await stored_call(
        store,
        sc.inbound_answered(
            ["101", "102"], "102", client="79161234567", call_id="a", start=sc.START
        ),
    )
    missed = await stored_call(
        store, sc.inbound_missed(["103"], client="79035550011", call_id="m", start=sc.START + 1000)
    )
    outbound = await stored_call(
        store,
        sc.outbound_answered(
            employee="104", client="79265550003", call_id="o", start=sc.START + 2000
        ),
    )

    async def ids(**query) -> list[str]:
        return [row.state.call_id for row in await store.find_calls(CallQuery(**query))]

    assert await ids() == ["o", "m", "a"]
    assert await ids(limit=2) == ["o", "m"]
    assert await ids(before=outbound.started_at) == ["m", "a"]
    assert await ids(since=missed.started_at) == ["o", "m"]
    assert await ids(numbers=((ACCOUNT, "+79161234567"),)) == ["a"]
    assert await ids(numbers=(("999999", "+79161234567"),)) == []  # not that account's
    assert await ids(extension="102") == ["a"]  # rang (and answered)
    assert await ids(extension="104") == ["o"]  # dialled
    assert await ids(outcome="missed") == ["m"]
    assert await ids(account="999999") == []
    assert await ids(call_id="m") == ["m"]
    [row] = await store.find_calls(CallQuery(call_id="a"))
    assert row.state == answered


async def test_each_integrations_status_is_listed_and_filtered(store: Store) -> None:
    for call_id in ("done", "pending", "retrying", "dead"):
        await stored_call(store, sc.inbound_answered(call_id=call_id), [USEDESK, AMO])
    await stored_call(store, sc.inbound_answered(call_id="unrouted"))
    rows = {(r.call_id, r.integration): r for r in await store.pending_dispatches(100)}
    for call_id in ("done", "pending", "retrying", "dead"):
        await store.complete_dispatch(rows[call_id, AMO].id)
    await store.complete_dispatch(rows["done", USEDESK].id)
    await store.fail_dispatch(rows["retrying", USEDESK].id, "Usedesk answered 500", 99.0)
    await store.fail_dispatch(rows["dead", USEDESK].id, "Usedesk: unknown client_id", None)

    calls = {r.state.call_id: r.statuses for r in await store.find_calls(CallQuery())}
    assert calls["unrouted"] == {}
    for status in ("done", "pending", "retrying", "dead"):
        assert calls[status] == {USEDESK: DeliveryStatus(status), AMO: DeliveryStatus.DONE}

    async def ids(**query) -> set[str]:
        return {row.state.call_id for row in await store.find_calls(CallQuery(**query))}

    assert await ids(status=DeliveryStatus.DEAD) == {"dead"}
    assert await ids(status=DeliveryStatus.RETRYING) == {"retrying"}
    assert await ids(status=DeliveryStatus.PENDING) == {"pending"}
    assert await ids(status=DeliveryStatus.DONE) == {"done", "pending", "retrying", "dead"}
    assert await ids(status=DeliveryStatus.DONE, integration=USEDESK) == {"done"}
    assert await ids(integration=AMO) == {"done", "pending", "retrying", "dead"}


async def test_a_call_row_carries_the_latest_crm_link(store: Store) -> None:
    await stored_call(store, sc.inbound_answered(call_id="c1"), [USEDESK])
    [row] = await store.dispatches_for(ACCOUNT, "c1")
    first = hook_call(1, decisions=(Decision("client 2001 found", link="https://u/clients/2001"),))
    second = hook_call(
        2,
        decisions=(
            Decision("ticket 5001 created", link="https://u/tickets/5001"),
            Decision("owner 514", "missed call, on-duty agent"),
        ),
    )
    await store.complete_dispatch(row.id, [NewCallRecord(USEDESK, first, 1.0)])
    await store.add_call_records(ACCOUNT, "c1", [NewCallRecord(USEDESK, second, 2.0)])
    [call] = await store.find_calls(CallQuery(call_id="c1"))
    assert call.links == {USEDESK: "https://u/tickets/5001"}


async def test_calls_and_webhooks_stored_before_the_upgrade_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database left by the release before call records: its calls are listed by start and
    number, and their webhooks found by call, as those of new calls are."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    with monkeypatch.context() as m:
        m.setattr(migrations, "STEPS", migrations.STEPS[:3])
        migrations.migrate(db)
    scenario = sc.inbound_answered(client="89161234567", call_id="old.1")
    state = None
    for params in scenario.events:
        db.execute(
            "INSERT INTO inbox (account, received_at, params, status) VALUES (?, 5.0, ?, 'done')",
            (ACCOUNT, json.dumps(params)),
        )
        event = parse_event(params)
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account=ACCOUNT, region="RU", received_at=5.0)
    assert state is not None
    db.execute(
        "INSERT INTO calls (account, call_id, state, finished, last_received_at)"
        " VALUES (?, ?, ?, 1, 5.0)",
        (ACCOUNT, "old.1", state.model_dump_json()),
    )
    db.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        [row] = await store.find_calls(
            CallQuery(numbers=((ACCOUNT, "+79161234567"),), since=float(sc.START), extension="102")
        )
        assert row.state == state
        events = await store.call_events(ACCOUNT, "old.1")
        assert [e.params for e in events] == scenario.events
    finally:
        await store.close()


async def test_the_next_page_starts_after_the_last_call_shown_even_amid_a_tie(
    store: Store,
) -> None:
    for call_id in ("a", "b", "c", "d"):  # Sipuni's times are whole seconds: one start
        await stored_call(store, sc.internal(call_id=call_id, start=sc.START))
    await stored_call(store, sc.internal(call_id="z", start=sc.START - 60))

    async def ids(**query) -> list[str]:
        return [row.state.call_id for row in await store.find_calls(CallQuery(**query))]

    assert await ids(limit=2) == ["d", "c"]
    assert await ids(limit=2, before=float(sc.START), before_call_id="c") == ["b", "a"]
    assert await ids(before=float(sc.START), before_call_id="a") == ["z"]


async def test_calls_are_found_by_a_few_digits_of_the_number(store: Store) -> None:
    await stored_call(store, sc.inbound_answered(client="79161234567", call_id="a"))
    await stored_call(store, sc.inbound_missed(client="79035550011", call_id="m"))

    async def ids(digits: str) -> set[str]:
        found = await store.find_calls(CallQuery(number_digits=digits))
        return {row.state.call_id for row in found}

    assert await ids("4567") == {"a"}
    assert await ids("0355") == {"m"}
    assert await ids("79") == {"a", "m"}
    assert await ids("000") == set()


def test_a_routing_decisions_json_is_made_once_however_often_it_is_proposed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[object] = []
    real = callrecords._ENTRY

    class Counting:
        def dump_json(self, entry: object) -> bytes:
            made.append(entry)
            return real.dump_json(entry)  # type: ignore[arg-type]

    monkeypatch.setattr(callrecords, "_ENTRY", Counting())
    decision = Routing(sees=True, scheme_filter="an unusual reason, seen only in this test")
    texts = {callrecords.encode(decision) for _ in range(3)}
    again = Routing(sees=True, scheme_filter="an unusual reason, seen only in this test")
    texts.add(callrecords.encode(again))
    assert texts == {real.dump_json(decision).decode()}
    assert made == [decision]
