"""Per-key locks (find-or-create per phone number): serialise, and never leak a key."""

from __future__ import annotations

import asyncio

import pytest

from connector_core.integrations import KeyedLocks


async def test_one_holder_per_key_and_the_key_is_dropped_after() -> None:
    locks, order = KeyedLocks(), []

    async def use(name: str) -> None:
        async with locks("phone:+79161234567"):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(use("a"), use("b"))
    assert order == ["a in", "a out", "b in", "b out"]
    assert len(locks) == 0


async def test_a_waiter_cancelled_while_waiting_does_not_leak_its_key() -> None:
    locks = KeyedLocks()
    entered = asyncio.Event()

    async def hold() -> None:
        async with locks("k"):
            entered.set()
            await asyncio.sleep(0.05)

    holder = asyncio.create_task(hold())
    await entered.wait()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01), locks("k"):
            pass  # never reached: the holder keeps the lock longer than the timeout
    await holder
    assert len(locks) == 0
