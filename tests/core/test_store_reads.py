"""The console's reads and ``connector check``'s store info, on each backend."""

from __future__ import annotations

import pytest

from connector_core import tracker
from connector_core.callrecords import HookCall, HookOutcome, NewCallRecord
from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind
from connector_core.clock import FakeClock
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios as sc
from connector_core.store.base import NewDispatch, QueueDepth, Store
from tests.store_backends import StoreBackend


@pytest.fixture
async def store(store_backend: StoreBackend):
    s = store_backend.new(clock=FakeClock())
    await s.open()
    yield s
    await s.close()


async def _stored(store: Store, scenario: sc.Scenario, account: str = "012345") -> CallState:
    state: CallState | None = None
    for params in scenario.events:
        event = parse_event(params)
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account=account, region="RU", received_at=1.0)
        await store.commit_event(None, state, [])
    assert state is not None
    return state


async def test_call_links_are_the_call_records_plugins_keep(store: Store) -> None:
    usedesk, amo = store.effects("012345/usedesk"), store.effects("012345/amo")
    await usedesk.put("call:c1", {"ticket": 5001})
    await usedesk.put("call:c2", {"ticket": 5002})
    await usedesk.put("phone:+7916", {"client": 1})
    await amo.put("call:c1", {"lead": 7})
    links = await store.call_links(["012345/usedesk", "012345/amo"], ["c1", "c3", "c1"])
    assert links == {
        ("012345/usedesk", "c1"): {"ticket": 5001},
        ("012345/amo", "c1"): {"lead": 7},
    }
    assert await store.call_links(["012345/usedesk"], []) == {}


async def test_queue_depths_count_waiting_retrying_and_dead_rows(store: Store) -> None:
    rows = [
        NewDispatch(f"012345/{name}", LifecycleEvent(kind=kind, id=kind.value))
        for name in ("usedesk", "amo")
        for kind in (LifecycleKind.STARTED, LifecycleKind.ANSWERED, LifecycleKind.FINISHED)
    ]
    await store.commit_event(None, CallState(account="012345", call_id="c1"), rows)
    by_key = {(d.integration, d.key): d for d in await store.pending_dispatches(10)}
    await store.fail_dispatch(by_key["012345/usedesk", "started"].id, "500", retry_at=9.0)
    await store.fail_dispatch(by_key["012345/usedesk", "answered"].id, "refused", retry_at=None)
    for key in ("started", "answered", "finished"):
        await store.complete_dispatch(by_key["012345/amo", key].id)
    assert await store.queue_depths() == {
        "012345/usedesk": QueueDepth(
            pending=1, retrying=1, dead=1, last_error="refused", last_error_call="c1"
        ),
    }


async def test_recent_use_counts_each_extension_once_per_call(store: Store) -> None:
    await _stored(store, sc.inbound_answered(["101", "102"], "102", call_id="a"))
    await _stored(store, sc.inbound_missed(["101"], call_id="m"))
    await _stored(store, sc.scheme_transfer())
    await _stored(store, sc.inbound_missed(["555"], call_id="x"), account="999999")
    everything = await store.recent_use("012345", 100)
    assert everything.calls == 3
    assert everything.extensions == {"101": 3, "102": 2}  # not the other account's 555
    assert sc.SALES in everything.schemes
    assert everything.schemes == sorted(everything.schemes, key=lambda s: (s[0] or "", s[1] or ""))
    latest = await store.recent_use("012345", 1)  # the scheme call, stored last
    assert latest.calls == 1 and sc.SALES in latest.schemes


async def test_info_says_the_backend_and_that_the_schema_is_current(
    store: Store, store_backend: StoreBackend
) -> None:
    info = await store.info()
    assert info.backend == store_backend.name
    assert info.version == info.latest > 0


async def test_group_work_is_a_groups_pending_rows_and_its_calls_state(store: Store) -> None:
    """What the dispatcher reads per call group, in one trip: the group's pending rows in
    order (not another integration's, not those done), and the call's state."""
    rows = [
        NewDispatch(f"012345/{name}", LifecycleEvent(kind=kind, id=kind.value))
        for name in ("usedesk", "amo")
        for kind in (LifecycleKind.STARTED, LifecycleKind.ANSWERED, LifecycleKind.FINISHED)
    ]
    state = CallState(account="012345", call_id="c1", client_number="+74950000000")
    await store.commit_event(None, state, rows)
    first = (await store.group_work("012345/usedesk", "012345", "c1")).rows[0]
    await store.complete_dispatch(first.id)

    work = await store.group_work("012345/usedesk", "012345", "c1")

    assert [(r.integration, r.key) for r in work.rows] == [
        ("012345/usedesk", "answered"),
        ("012345/usedesk", "finished"),
    ]
    assert work.call == state
    nothing = await store.group_work("012345/usedesk", "012345", "c2")
    assert nothing.rows == [] and nothing.call is None


async def test_a_rows_completion_reads_its_groups_rows_added_meanwhile(store: Store) -> None:
    """The last row's result written with the read of what the group got meanwhile: the rows
    behind it (its call's only, in order) and the call's state that made them."""
    kinds = (LifecycleKind.STARTED, LifecycleKind.ANSWERED, LifecycleKind.FINISHED)
    state = CallState(account="012345", call_id="c1", client_number="+74950000000")
    await store.commit_event(None, state, [_row("usedesk", kinds[0]), _row("amo", kinds[0])])
    (started,) = (await store.group_work("012345/usedesk", "012345", "c1")).rows
    later = state.model_copy(update={"last_received_at": 9.0})
    await store.commit_event(
        None, later, [_row(name, k) for name in ("usedesk", "amo") for k in kinds[1:]]
    )
    done = HookCall(
        hook="connector_call_started",
        record="started",
        attempt=1,
        started_at=5.0,
        seconds=0.1,
        outcome=HookOutcome.DONE,
    )

    more = await store.complete_and_read_group(
        started, [NewCallRecord(started.integration, done, 5.0)]
    )

    assert [(r.integration, r.key) for r in more.rows] == [
        ("012345/usedesk", "answered"),
        ("012345/usedesk", "finished"),
    ]
    assert more.call == later
    assert (await store.get_dispatch(started.id)).status == "done"  # type: ignore[union-attr]
    (record,) = await store.call_records("012345", "c1")
    assert record.entry == done
    await store.complete_dispatch(more.rows[0].id)
    last = await store.complete_and_read_group(more.rows[1])
    assert last.rows == [] and last.call is None  # nothing left: no state to run with


def _row(integration: str, kind: LifecycleKind) -> NewDispatch:
    return NewDispatch(f"012345/{integration}", LifecycleEvent(kind=kind, id=kind.value))
