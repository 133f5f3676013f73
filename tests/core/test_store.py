"""The store's guarantees, on each backend: durable inbox, atomic commits, unique dispatches,
effects. SQLite's own (its pragmas, rows of its first release) run on SQLite only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from connector_core import tracker
from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind, Outcome
from connector_core.clock import FakeClock
from connector_core.errors import InvalidRequestError
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios as sc
from connector_core.store.base import NewDispatch, Store
from connector_core.store.sqlite import SQLiteStore
from tests.store_backends import StoreBackend

STARTED, FINISHED = LifecycleKind.STARTED, LifecycleKind.FINISHED


def proposed(kind: LifecycleKind, not_before: float = 0.0) -> NewDispatch:
    return NewDispatch("012345/x", LifecycleEvent(kind=kind, id=kind.value), not_before)


def without_key() -> list[NewDispatch]:
    """A row the store must refuse (NOT NULL): its record was never validated."""
    record = LifecycleEvent.model_construct(kind=LifecycleKind.STARTED, id=None)
    return [NewDispatch("012345/x", record)]


@pytest.fixture
async def store(store_backend: StoreBackend):
    s = store_backend.new(clock=FakeClock())
    await s.open()
    yield s
    await s.close()


async def test_inbox_survives_reopen_and_keeps_order(store_backend: StoreBackend) -> None:
    s = store_backend.new()
    await s.open()
    ids = [await s.append_event("012345", {"event": str(i)}, 10.0 + i) for i in range(3)]
    await s.close()

    s = store_backend.new()
    await s.open()
    pending = await s.pending_events(10)
    await s.close()
    assert [p.id for p in pending] == ids
    assert [p.params["event"] for p in pending] == ["0", "1", "2"]
    assert pending[0].account == "012345" and pending[0].received_at == 10.0


async def test_wal_and_full_sync_are_on(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    try:
        mode = await store._run(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0])
        sync = await store._run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await store.close()
    assert (mode, sync) == ("wal", 2)  # 2 = FULL


async def test_commit_event_is_atomic_and_dispatches_unique(store: Store) -> None:
    item = await store.append_event("012345", {"event": "1"}, 1.0)
    state = CallState(account="012345", call_id="c1", last_received_at=1.0)
    await store.commit_event(item, state, [proposed(STARTED), proposed(STARTED)])
    await store.commit_event(None, state, [proposed(STARTED, 99.0)])

    assert await store.pending_events(10) == []
    rows = await store.dispatches_for("012345", "c1")
    assert [(r.key, r.not_before) for r in rows] == [("started", 0.0)]
    loaded = await store.load_call("012345", "c1")
    assert loaded is not None and loaded.call_id == "c1"


async def test_failed_commit_leaves_the_item_pending(store: Store) -> None:
    item = await store.append_event("012345", {"event": "1"}, 1.0)
    state = CallState(account="012345", call_id="c1")
    with pytest.raises(Exception, match=r"(?i)not.null"):  # each backend's own words
        await store.commit_event(item, state, without_key())
    assert [p.id for p in await store.pending_events(10)] == [item]
    assert await store.load_call("012345", "c1") is None


async def test_dispatch_retry_and_dead_letter(store: Store) -> None:
    state = CallState(account="012345", call_id="c1")
    await store.commit_event(None, state, [proposed(STARTED), proposed(FINISHED)])
    first, second = await store.pending_dispatches(10)
    await store.fail_dispatch(first.id, "boom", retry_at=50.0)
    await store.fail_dispatch(second.id, "refused", retry_at=None)
    pending = await store.pending_dispatches(10)
    assert [(p.key, p.attempts, p.not_before, p.last_error) for p in pending] == [
        ("started", 1, 50.0, "boom")
    ]
    dead = await store.dead_dispatches()
    assert [(d.key, d.last_error, d.status) for d in dead] == [("finished", "refused", "dead")]
    await store.complete_dispatch(first.id)
    assert await store.pending_dispatches(10) == []
    stats = await store.stats()
    assert stats["dispatches_pending"] == 0 and stats["dispatches_dead"] == 1


async def test_effects_are_recorded_once_per_integration(store: Store) -> None:
    a, b = store.effects("012345/a"), store.effects("012345/b")
    assert await a.put("client:+79161234567", {"id": 1}) is True
    assert await a.put("client:+79161234567", {"id": 2}) is False
    assert await a.get("client:+79161234567") == {"id": 1}
    assert await b.get("client:+79161234567") is None
    await a.put("journal:x", {"n": 1})
    assert await a.items("journal:") == [("journal:x", {"n": 1})]


async def test_a_dropped_effect_can_be_written_again(store: Store) -> None:
    a = store.effects("012345/a")
    await a.put("phone:+79161234567:client@x", {"id": 1})
    assert await a.drop("phone:+79161234567:client@x") is True
    assert await a.drop("phone:+79161234567:client@x") is False
    assert await a.put("phone:+79161234567:client@x", {"id": 2}) is True
    assert await a.get("phone:+79161234567:client@x") == {"id": 2}


async def test_forget_links_takes_the_subject_and_its_colon_keys_only(store: Store) -> None:
    a, b = store.effects("012345/a"), store.effects("012345/b")
    for key in ("phone:+7916", "phone:+7916:client@x", "phone:+79161:client@x", "comment:1"):
        await a.put(key, {})
    await b.put("phone:+7916:client@y", {})
    assert await store.forget_links("phone:+7916", "012345/a") == [
        ("012345/a", "phone:+7916"),
        ("012345/a", "phone:+7916:client@x"),
    ]
    assert [k for k, _ in await a.items()] == ["phone:+79161:client@x", "comment:1"]
    assert await store.forget_links("phone:+7916", None) == [("012345/b", "phone:+7916:client@y")]


async def test_idle_open_calls_skips_finished_and_recent(store: Store) -> None:
    old = CallState(account="012345", call_id="old", last_received_at=10.0)
    new = CallState(account="012345", call_id="new", last_received_at=100.0)
    done = CallState(account="012345", call_id="done", last_received_at=5.0, finished_by="hangup")
    for s in (old, new, done):
        await store.commit_event(None, s, [])
    idle = await store.idle_open_calls(50.0, 10)
    assert [c.call_id for c in idle] == ["old"]


async def test_rejected_webhooks_are_kept(store: Store) -> None:
    await store.record_rejected("012345", {"event": "x"}, "field 'event' must be a number", 3.0)
    [row] = await store.rejected()
    assert row.reason == "field 'event' must be a number" and row.params == {"event": "x"}


# --- rows written before dispatch rows kept their record ---------------------------------------

RELEASE_1 = Path(__file__).parent / "data" / "schema_v1.sql"
LEGACY_KEYS = [
    "started",
    "answered",
    "transferred:102",  # a transfer the call does not show
    "entered_scheme:Продажи",  # announced while only the name was known
    "transfer_scheme:Продажи",
    "entered_scheme:000-999",  # a scheme the call does not show
]


def _call_known_by_name_then_number() -> CallState:
    s = sc.scheme_transfer()
    state: CallState | None = None
    for params in sc.with_scheme_named_by(s, "treeName", (1, 2)).events:
        event = parse_event(params)
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account="012345", region="RU", received_at=1.0)
    assert state is not None
    return state


async def test_a_row_written_by_release_1_runs_from_its_key(tmp_path: Path) -> None:
    """Release 1 kept only the key: the record is read from it, with what the call knows now."""
    call = _call_known_by_name_then_number()
    path = tmp_path / "connector.db"
    db = sqlite3.connect(path)
    db.executescript(RELEASE_1.read_text(encoding="utf-8"))
    db.execute(
        "INSERT INTO calls (account, call_id, state, finished, last_received_at)"
        " VALUES (?, ?, ?, 1, 1.0)",
        ("012345", call.call_id, call.model_dump_json()),
    )
    db.executemany(  # release 1's own statement
        "INSERT INTO dispatches (account, call_id, integration, key, not_before, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [("012345", call.call_id, "012345/x", key, 0.0, 1.0) for key in LEGACY_KEYS],
    )
    db.commit()
    db.close()

    store = SQLiteStore(path, clock=FakeClock())
    await store.open()
    try:
        rows = await store.pending_in_group("012345/x", "012345", call.call_id)
        loaded = await store.load_call("012345", call.call_id)
    finally:
        await store.close()
    assert loaded is not None
    assert [r.record for r in rows] == [None] * len(LEGACY_KEYS)
    assert [r.kind for r in rows] == [
        LifecycleKind.STARTED,
        LifecycleKind.ANSWERED,
        LifecycleKind.TRANSFERRED,
        LifecycleKind.ENTERED_SCHEME,
        LifecycleKind.REACHED_TRANSFER_SCHEME,
        LifecycleKind.ENTERED_SCHEME,
    ]
    started, answered, no_transfer, entered, reached, lost = rows
    assert started.hook_record(loaded).hook_arguments() == {}
    assert answered.hook_record(loaded).extension == "101"
    sales = loaded.schemes[1]
    assert (sales.id, sales.name) == sc.SALES
    # Found by the name the key was written with, passed with the number learnt since.
    assert entered.hook_record(loaded).hook_arguments() == {"scheme": sales}
    assert reached.hook_record(loaded).hook_arguments() == {"scheme": sales}
    # What no longer resolves is dead-lettered at once, saying why, not retried for 72 h.
    with pytest.raises(InvalidRequestError, match=r"names scheme '000-999'.*connector dlq drop"):
        lost.hook_record(loaded)
    with pytest.raises(InvalidRequestError, match=r"transfer 1 to 102; the call shows 0"):
        no_transfer.hook_record(loaded)


# --- what the CLI, the console and the health checks use -----------------------------------


async def test_a_quarantined_event_is_requeued_or_dropped(store: Store) -> None:
    first = await store.append_event("012345", {"call_id": "c1"}, 1.0)
    second = await store.append_event("012345", {"call_id": "c2"}, 2.0)
    await store.fail_event(first, "boom", quarantine=False)
    await store.fail_event(second, "boom", quarantine=True)
    await store.fail_event(second, "ignored: no longer pending", quarantine=False)
    assert [(i.id, i.attempts) for i in await store.pending_events(10)] == [(first, 1)]
    [held] = await store.quarantined_events()
    assert (held.id, held.status, held.attempts, held.last_error) == (
        second,
        "quarantined",
        1,
        "boom",
    )
    assert await store.requeue_event(first) is False  # not quarantined
    assert await store.requeue_event(second) is True
    requeued = await store.get_event(second)
    assert requeued is not None and (requeued.status, requeued.attempts) == ("pending", 0)
    await store.fail_event(second, "again", quarantine=True)
    assert await store.drop_event(second) is True
    assert await store.drop_event(second) is False
    dropped = await store.get_event(second)
    assert dropped is not None and dropped.status == "dropped"
    assert await store.get_event(999) is None
    stats = await store.stats()
    assert (stats["inbox_pending"], stats["inbox_quarantined"], stats["inbox_total"]) == (1, 0, 2)


async def test_inbox_items_page_by_time_and_id(store: Store) -> None:
    ids = [await store.append_event("012345", {"n": i}, float(i)) for i in range(5)]
    assert [i.id for i in await store.inbox_items(since=2.0)] == ids[2:]
    assert [i.id for i in await store.inbox_items(after_id=ids[3])] == ids[4:]
    assert [i.id for i in await store.inbox_items(limit=2)] == ids[:2]


async def test_a_dead_row_is_requeued_or_dropped(store: Store) -> None:
    state = CallState(account="012345", call_id="c1")
    await store.commit_event(None, state, [proposed(STARTED), proposed(FINISHED)])
    started, finished = await store.pending_dispatches(10)
    await store.fail_dispatch(started.id, "refused", retry_at=None)
    await store.fail_dispatch(finished.id, "refused", retry_at=None)
    assert await store.requeue_dispatch(started.id) is True
    assert await store.requeue_dispatch(started.id) is False  # no longer dead
    again = await store.get_dispatch(started.id)
    assert again is not None and (again.status, again.attempts) == ("pending", 0)
    assert again.record == started.record
    assert await store.drop_dispatch(finished.id) is True
    assert await store.drop_dispatch(finished.id) is False
    assert [(d.key, d.status) for d in await store.dispatches_for("012345", "c1")] == [
        ("started", "pending"),
        ("finished", "dropped"),
    ]
    assert await store.get_dispatch(999) is None


async def test_due_heads_put_the_calls_that_hung_up_first(store: Store) -> None:
    calls = [CallState(account="012345", call_id=f"c{i}") for i in range(3)]
    for call in calls:
        await store.commit_event(None, call, [proposed(STARTED)])
    # c1 hangs up while its ring-time row still waits: its group's work completes the call.
    await store.commit_event(None, calls[1], [proposed(FINISHED)])
    heads = await store.due_heads("012345/x", now=10.0, limit=10)
    assert [(h.call_id, h.key, h.completes_call) for h in heads] == [
        ("c1", "started", True),
        ("c0", "started", False),
        ("c2", "started", False),
    ]
    assert [h.call_id for h in await store.due_heads("012345/x", now=10.0, limit=1)] == ["c1"]


async def test_due_heads_are_each_groups_first_row_when_due(store: Store) -> None:
    one, two = CallState(account="012345", call_id="c1"), CallState(account="012345", call_id="c2")
    await store.commit_event(None, one, [proposed(STARTED), proposed(FINISHED)])
    await store.commit_event(None, two, [proposed(STARTED, not_before=50.0)])
    heads = await store.due_heads("012345/x", now=10.0, limit=10)
    assert [(h.call_id, h.key) for h in heads] == [("c1", "started")]
    heads = await store.due_heads("012345/x", now=60.0, limit=10)
    assert [(h.call_id, h.key) for h in heads] == [("c1", "started"), ("c2", "started")]
    assert await store.due_heads("012345/other", now=60.0, limit=10) == []
    group = await store.pending_in_group("012345/x", "012345", "c1")
    assert [d.key for d in group] == ["started", "finished"]


async def test_a_write_probe_succeeds_on_an_open_store(store: Store) -> None:
    assert await store.writable() is True


async def test_seen_schemes_are_each_scheme_once(store: Store) -> None:
    await _through_tracker(store, sc.scheme_transfer())
    seen = await store.seen_schemes("012345")
    assert seen == sorted(set(seen), key=lambda s: (s.id or "", s.name or ""))
    assert any(s.matches(sc.SALES[0]) for s in seen)
    assert await store.seen_schemes("999999") == []


async def _through_tracker(store: Store, scenario: sc.Scenario) -> CallState:
    state: CallState | None = None
    for params in scenario.events:
        event = parse_event(params)
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account="012345", region="RU", received_at=1.0)
        await store.commit_event(None, state, [])
    assert state is not None
    return state


async def test_the_dispatcher_reads_the_state_the_worker_wrote_without_parsing_it(
    store: Store,
) -> None:
    state = CallState(account="012345", call_id="c1", outcome=Outcome.ANSWERED)
    await store.commit_event(None, state, [proposed(LifecycleKind.STARTED)])
    work = await store.group_work("012345/x", "012345", "c1")
    assert work.call is state
    assert (await store.load_calls([("012345", "c1")]))[("012345", "c1")] is state
    assert await store.load_call("012345", "c1") is state


async def test_a_state_written_by_another_process_is_parsed(
    store: Store, store_backend: StoreBackend
) -> None:
    state = CallState(account="012345", call_id="c1", outcome=Outcome.ANSWERED)
    other = store_backend.new(clock=FakeClock())  # another process on the same store
    await other.open()
    try:
        await other.commit_event(None, state, [proposed(LifecycleKind.STARTED)])
    finally:
        await other.close()
    work = await store.group_work("012345/x", "012345", "c1")
    assert work.call == state and work.call is not state
