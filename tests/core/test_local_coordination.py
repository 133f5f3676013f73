"""LocalCoordination: the in-memory leases, locks, rate windows and channels of a store that
serves one process (SQLite), with a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connector_core.clock import FakeClock
from connector_core.store.base import StoredAuth
from connector_core.store.local import LocalCoordination
from connector_core.store.sqlite import SQLiteStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> LocalCoordination:
    return LocalCoordination(clock)


async def test_a_lease_is_held_by_one_owner_until_it_expires(
    store: LocalCoordination, clock: FakeClock
) -> None:
    assert await store.take_leases(["call:1", "call:2"], "a", 10) == {"call:1", "call:2"}
    assert await store.take_leases(["call:1", "call:3"], "b", 10) == {"call:3"}
    assert await store.take_leases(["call:1"], "a", 10) == {"call:1"}  # its own: kept

    clock.advance(10)

    assert await store.take_leases(["call:1", "call:3"], "b", 10) == {"call:1", "call:3"}


async def test_renewing_keeps_only_unexpired_leases(
    store: LocalCoordination, clock: FakeClock
) -> None:
    await store.take_leases(["x"], "a", 10)
    clock.advance(9)
    assert await store.renew_leases("a", 10) == 1
    clock.advance(9)  # 18 s after the take: alive only thanks to the renewal
    assert await store.take_leases(["x"], "b", 10) == set()
    clock.advance(2)
    assert await store.renew_leases("a", 10) == 0  # expired meanwhile: not renewed
    assert await store.take_leases(["x"], "b", 10) == {"x"}


async def test_releasing_frees_only_the_owners_leases(store: LocalCoordination) -> None:
    await store.take_leases(["x", "y"], "a", 10)
    await store.take_leases(["z"], "b", 10)

    await store.release_leases("b", ["x"])  # not b's: stays a's
    assert await store.take_leases(["x"], "b", 10) == set()
    await store.release_leases("a", ["x"])
    assert await store.take_leases(["x"], "b", 10) == {"x"}
    await store.release_leases("a")
    assert await store.take_leases(["y"], "b", 10) == {"y"}
    assert await store.take_leases(["z"], "a", 10) == set()


async def test_a_lock_is_held_by_one_holder_at_a_time(store: LocalCoordination) -> None:
    inside: list[str] = []
    most = 0

    async def hold(who: str) -> None:
        nonlocal most
        async with store.lock("phone:+79001234567"):
            inside.append(who)
            most = max(most, len(inside))
            await asyncio.sleep(0)
            inside.remove(who)

    await asyncio.gather(*(hold(str(i)) for i in range(5)))
    assert most == 1


async def test_rate_slots_keep_both_windows(store: LocalCoordination, clock: FakeClock) -> None:
    granted = [await store.take_rate_slot("w", 3, 2) for _ in range(2)]
    assert granted == [0.0, 0.0]
    assert await store.take_rate_slot("w", 3, 2) == pytest.approx(1.0)  # the second's room
    assert await store.take_rate_slot("other", 3, 2) == 0.0  # another window
    clock.advance(1.0)
    assert await store.take_rate_slot("w", 3, 2) == 0.0
    assert await store.take_rate_slot("w", 3, 2) == pytest.approx(59.0)  # the minute's room
    clock.advance(59.0)
    assert await store.take_rate_slot("w", 3, 2) == 0.0


async def test_the_margin_widens_the_windows(store: LocalCoordination, clock: FakeClock) -> None:
    assert await store.take_rate_slot("w", 1, 1, margin=0.25) == 0.0
    clock.advance(60.0)
    assert await store.take_rate_slot("w", 1, 1, margin=0.25) == pytest.approx(0.25)
    clock.advance(0.25)
    assert await store.take_rate_slot("w", 1, 1, margin=0.25) == 0.0


async def test_a_message_reaches_every_subscriber_of_its_channel(
    store: LocalCoordination,
) -> None:
    got: list[tuple[str, str]] = []
    store.subscribe("cards", lambda payload: got.append(("one", payload)))
    store.subscribe("cards", lambda payload: got.append(("two", payload)))
    store.subscribe("inbox", lambda payload: got.append(("inbox", payload)))

    await store.publish("cards", '{"x": 1}')
    assert got == []  # on the loop's next turn, as a message from the database would come
    await asyncio.sleep(0)

    assert got == [("one", '{"x": 1}'), ("two", '{"x": 1}')]


async def test_the_latest_auth_result_of_each_integration_is_kept(
    store: LocalCoordination,
) -> None:
    await store.save_auth(StoredAuth("012345/desk", "auth_failed", "key refused", 1.0))
    await store.save_auth(StoredAuth("012345/desk", "ok", "", 2.0))
    await store.save_auth(StoredAuth("012345/crm", "ok", "", 2.0))

    results = await store.auth_results()
    assert results["012345/desk"] == StoredAuth("012345/desk", "ok", "", 2.0)
    assert set(results) == {"012345/desk", "012345/crm"}


async def test_the_sqlite_store_coordinates_in_memory(tmp_path: Path, clock: FakeClock) -> None:
    store = SQLiteStore(tmp_path / "c.db", clock=clock)

    assert store.shared is False
    assert await store.take_leases(["call:1"], "a", 10) == {"call:1"}
    assert await store.take_leases(["call:1"], "b", 10) == set()
    clock.advance(10)  # the store's clock decides expiry
    assert await store.take_leases(["call:1"], "b", 10) == {"call:1"}
