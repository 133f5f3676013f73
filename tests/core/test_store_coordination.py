"""Coordination through the store, on each backend: leases, locks, shared rate windows,
channels and the stored authorisation checks.

A shared store (PostgreSQL) must give them across processes: there the second party is a
second store object on the same database, with connections of its own, as another process
has. A store that is not shared gives them within its process: there both parties use one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from connector_core import tracker
from connector_core.events import parse_event
from connector_core.simulator import scenarios
from connector_core.store.base import (
    DISPATCH_CHANNEL,
    INBOX_CHANNEL,
    NewDispatch,
    Store,
    StoredAuth,
)
from tests.store_backends import StoreBackend

# A bound on waiting for something that must happen: it fails a broken store instead of
# hanging, and never decides a passing run.
EVENTUALLY = 10.0


@pytest.fixture
async def stores(store_backend: StoreBackend) -> AsyncIterator[tuple[Store, Store]]:
    """Two parties: two stores on one database when shared, else one store twice."""
    first = store_backend.new()
    await first.open()
    second = first
    if first.shared:
        second = store_backend.new()
        await second.open()
    yield first, second
    if second is not first:
        await second.close()
    await first.close()


# -- leases -------------------------------------------------------------------------------------


async def test_a_held_lease_is_not_taken_by_another_owner(stores: tuple[Store, Store]) -> None:
    a, b = stores
    assert await a.take_leases(["call:1", "call:2"], "worker-a", 30.0) == {"call:1", "call:2"}
    assert await b.take_leases(["call:2", "call:3"], "worker-b", 30.0) == {"call:3"}
    # An owner takes its own leases again (a batch that overlaps the last one).
    assert await a.take_leases(["call:1", "call:3"], "worker-a", 30.0) == {"call:1"}
    assert await a.take_leases([], "worker-a", 30.0) == set()


async def test_an_expired_lease_is_taken_over(stores: tuple[Store, Store]) -> None:
    a, b = stores
    # A lease whose time is already up: no clock to wait for.
    assert await a.take_leases(["call:1"], "worker-a", -1.0) == {"call:1"}
    assert await b.take_leases(["call:1"], "worker-b", 30.0) == {"call:1"}
    assert await a.take_leases(["call:1"], "worker-a", 30.0) == set()


async def test_renewing_moves_the_expiry_of_the_owners_live_leases(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    await a.take_leases(["call:1", "call:2"], "worker-a", 30.0)
    await a.take_leases(["call:3"], "worker-a", -1.0)  # already expired: not renewed
    await b.take_leases(["call:4"], "worker-b", 30.0)
    assert await a.renew_leases("worker-a", 30.0) == 2
    assert await b.take_leases(["call:1", "call:3"], "worker-b", 30.0) == {"call:3"}
    # Renewed to a time already past, call:1 is free: renewing counts from now.
    assert await a.renew_leases("worker-a", -1.0) == 2
    assert await b.take_leases(["call:1"], "worker-b", 30.0) == {"call:1"}


async def test_released_leases_are_free_for_others(stores: tuple[Store, Store]) -> None:
    a, b = stores
    await a.take_leases(["call:1", "call:2", "call:3"], "worker-a", 30.0)
    await a.release_leases("worker-a", ["call:1"])
    await b.release_leases("worker-b", ["call:2"])  # not b's: stays a's
    assert await b.take_leases(["call:1", "call:2"], "worker-b", 30.0) == {"call:1"}
    await a.release_leases("worker-a")  # every lease of a
    assert await b.take_leases(["call:2", "call:3"], "worker-b", 30.0) == {"call:2", "call:3"}


# -- locks --------------------------------------------------------------------------------------


async def test_a_lock_has_one_holder_at_a_time(stores: tuple[Store, Store]) -> None:
    a, b = stores
    entered = asyncio.Event()

    async def second_holder() -> None:
        async with b.lock("usedesk:+79161234567"):
            entered.set()

    async with a.lock("usedesk:+79161234567"):
        waiter = asyncio.create_task(second_holder())
        for _ in range(20):  # give the second holder every chance to get in
            await asyncio.sleep(0.01)
        assert not entered.is_set()
        # Another name is another lock.
        async with asyncio.timeout(EVENTUALLY), b.lock("usedesk:+79035550011"):
            pass
    async with asyncio.timeout(EVENTUALLY):
        await waiter
    assert entered.is_set()


async def test_a_lock_is_free_again_after_its_holder_failed(stores: tuple[Store, Store]) -> None:
    a, b = stores
    with pytest.raises(RuntimeError, match="hook failed"):
        async with a.lock("k"):
            raise RuntimeError("hook failed")
    async with asyncio.timeout(EVENTUALLY), b.lock("k"):
        pass


async def test_locks_nest_however_many_are_held_at_once(stores: tuple[Store, Store]) -> None:
    """A hook holds its number's lock and, inside it, a lock every call shares (the Usedesk
    plugin's agent list). With more numbers at once than a pool has connections, a session
    per held lock deadlocked: every connection held by an outer lock, no inner one could
    get one. (The PostgreSQL kill loop stalled on it, hook calls pending forever.)"""
    a, b = stores
    inside: list[str] = []

    async def hook(store: Store, number: str) -> None:
        async with store.lock(f"usedesk:{number}"), store.lock("usedesk:agents"):
            inside.append(number)
            await asyncio.sleep(0.001)

    numbers = [f"+7916000{i:04d}" for i in range(24)]
    async with asyncio.timeout(EVENTUALLY * 3):
        await asyncio.gather(*(hook(a if i % 2 else b, n) for i, n in enumerate(numbers)))
    assert sorted(inside) == numbers


async def test_a_cancelled_wait_leaves_no_lock_behind(stores: tuple[Store, Store]) -> None:
    a, b = stores
    async with a.lock("k"):
        waiter = asyncio.create_task(b.lock("k").__aenter__())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(EVENTUALLY), a.lock("k"):
        pass
    async with asyncio.timeout(EVENTUALLY), b.lock("k"):
        pass


# -- shared rate windows ------------------------------------------------------------------------


async def test_a_minute_window_grants_per_minute_and_then_says_how_long_to_wait(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    assert [await a.take_rate_slot("token-1", 3, 10) for _ in range(3)] == [0.0] * 3
    wait = await b.take_rate_slot("token-1", 3, 10)
    assert 0.0 < wait <= 60.0
    assert await b.take_rate_slot("token-2", 3, 10) == 0.0  # another window


async def test_a_second_window_holds_bursts(stores: tuple[Store, Store]) -> None:
    a, b = stores
    # The margin widens the 1 s window to 31 s: the test cannot outlast it on a slow machine.
    assert [await a.take_rate_slot("token", 100, 2, margin=30.0) for _ in range(2)] == [0.0] * 2
    wait = await b.take_rate_slot("token", 100, 2, margin=30.0)
    assert 0.0 < wait <= 31.0


async def test_concurrent_requests_never_get_more_than_the_window(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    waits = await asyncio.gather(
        *(store.take_rate_slot("token", 5, 100) for store in (a, b) for _ in range(10))
    )
    assert waits.count(0.0) == 5
    assert all(w > 0.0 for w in waits if w != 0.0)


# -- channels -----------------------------------------------------------------------------------


async def test_a_published_message_reaches_each_subscriber_of_its_channel(
    store_backend: StoreBackend,
) -> None:
    listener = store_backend.new()
    cards: list[str] = []
    inbox: list[str] = []
    got_card = asyncio.Event()
    listener.subscribe("cards", cards.append)
    listener.subscribe("cards", lambda _payload: got_card.set())
    listener.subscribe("inbox", inbox.append)
    await listener.open()
    publisher = store_backend.new() if listener.shared else listener
    if publisher is not listener:
        await publisher.open()
    try:
        await publisher.publish("cards", '{"agent": "101"}')
        async with asyncio.timeout(EVENTUALLY):
            await got_card.wait()
    finally:
        if publisher is not listener:
            await publisher.close()
        await listener.close()
    assert cards == ['{"agent": "101"}']
    assert inbox == []


async def test_stored_work_is_announced_to_every_process(store_backend: StoreBackend) -> None:
    """An appended webhook wakes the workers (INBOX_CHANNEL), a commit that adds hook calls
    the dispatchers (DISPATCH_CHANNEL): the store says so itself, with the write."""
    listener = store_backend.new()
    heard: list[str] = []
    both = asyncio.Event()

    def on(channel: str):  # type: ignore[no-untyped-def]
        def hear(_payload: str) -> None:
            heard.append(channel)
            if {"inbox", "dispatches"} <= set(heard):
                both.set()

        return hear

    listener.subscribe(INBOX_CHANNEL, on("inbox"))
    listener.subscribe(DISPATCH_CHANNEL, on("dispatches"))
    await listener.open()
    writer = store_backend.new() if listener.shared else listener
    if writer is not listener:
        await writer.open()
    try:
        call = scenarios.inbound_missed(call_id="1717171700.1")
        await writer.append_event("012345", call.events[0], 1717171700.0)
        state, new = tracker.apply(
            None, parse_event(call.events[0]), account="012345", region="RU", received_at=1.0
        )
        await writer.commit_event(None, state, [NewDispatch("012345/rec", new[0])])
        async with asyncio.timeout(EVENTUALLY):
            await both.wait()
    finally:
        if writer is not listener:
            await writer.close()
        await listener.close()
    assert heard == ["inbox", "dispatches"]


# -- authorisation checks -----------------------------------------------------------------------


async def test_the_latest_authorisation_check_of_each_integration_is_shown_everywhere(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    await a.save_auth(StoredAuth("012345/usedesk", "failed", "401 from Usedesk", 1.0))
    await a.save_auth(StoredAuth("012345/amo", "ok", "", 2.0))
    await a.save_auth(StoredAuth("012345/usedesk", "ok", "", 3.0))
    assert await b.auth_results() == {
        "012345/amo": StoredAuth("012345/amo", "ok", "", 2.0),
        "012345/usedesk": StoredAuth("012345/usedesk", "ok", "", 3.0),
    }
